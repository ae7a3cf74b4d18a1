"""Names of files that one stage writes and another reads, so both sides spell them the same way."""

from pathlib import Path

# A training run's record of its held-out split (written by training, read by evaluation's --heldout).
SPLIT_FILE = "data_split.json"

# The VAE stage's record of the clips it skipped, in its output folder (vae_latents/) beside the chunk records.
VAE_SKIPPED_FILE = "_skipped.json"

# The audio stage's files per chunk key in its output folder (audio_latents/): the features and the record of what
# made them (written last: its presence marks a complete chunk).
AUDIO_FEATURES_SUFFIX = "_ff.npy"
AUDIO_TEXT_SUFFIX = "_text.json"
# The features of silence (the guidance negative, what audio dropout trains with), one pair of files per chunk length
# and frame rate: audio_latents/silence/<num_frames>f_<fps>fps_ff.npy + _text.json.
SILENCE_FOLDER = "silence"


def silence_files(audio_latents: Path, num_frames: int, fps: float) -> tuple[Path, Path]:
    """(features, record) of the silence for chunks of ``num_frames`` frames at ``fps`` in ``audio_latents``."""
    stem = Path(audio_latents) / SILENCE_FOLDER / f"{num_frames}f_{fps:g}fps"
    return stem.with_name(stem.name + AUDIO_FEATURES_SUFFIX), stem.with_name(stem.name + AUDIO_TEXT_SUFFIX)

"""The committed toy world loads as real weights do; its checkpoint learned to use the speech on held-out clips (the
mouth's tokens predict better with the clip's own speech than with another's); its prediction depends on the speech,
and exactly not at all once the audio path is cut (issue 14).

The held-out clips are made here (another seed than the toy's training and held-out sets: new figures and sentences)
in a voice no training clip has, and become chunks through the measurement's own stage calls.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from avatar_gen.synthetic import generate_dataset
from avatar_gen.toy.measure import (MeasureSettings, checkpoint_denoiser, held_out_chunks, interleave_by_clip,
                                    mouth_token_weight, prepare)
from avatar_gen.training.config import FlowSection
from avatar_gen.training.dataset import LatentAudioDataset
from avatar_gen.training.trainer import rectified_flow_loss
from avatar_gen.training.validation import audio_gain

REPO = Path(__file__).resolve().parent.parent
TOY_BASE = REPO / "models" / "toy-ltx-video"
TOY_CHECKPOINT = REPO / "models" / "toy-avatar"
HELD_OUT_SEED = 424242
HELD_OUT_VOICE = "en-us+f4"  # configs/toy-pretrain.yaml's held_out_voices: no training clip speaks with it
# With another clip's speech the committed checkpoint's velocity changes by 1.6 % of its size on these chunks
# (measured when it was committed, 2026-11-29 night: each frame's own speech, `local_margin_frames` 0, docs/results.md;
# 1.2 % with the +-2 frame window, 2.8 % over the narrow base); a projection that no longer reaches the transformer
# gives 0 exactly. The bar sits well between.
MIN_RELATIVE_CHANGE = 0.002
# The held-out audio gain on the mouth's tokens of these clips' chunks (the measurement's figure on 64 chunks:
# 1.0110 ± 0.0007; with the +-2 frame window 1.0018, without the mouth-weighted loss 1.00003): 1.01241 ± 0.00256 over
# 4 draws here when committed (1.00240 ± 0.00144 for the +-2 frame window's checkpoint). The test asks for about a
# fifth of that excess, which the window's checkpoint would not pass, and for the excess to stand 3 standard errors
# (of the 4-draw mean) clear of 0; the (narrow-base) checkpoint trained without the mouth-weighted loss gave
# 1.000041 ± 0.000057 here.
MIN_MOUTH_GAIN = 1.0025


@pytest.fixture(scope="module")
def toy_world(tmp_path_factory):
    assert (TOY_BASE / "model_index.json").is_file() and TOY_CHECKPOINT.is_dir(), \
        "the toy world is committed in models/ (docs/toy.md)"
    folder = tmp_path_factory.mktemp("toy_held_out")
    generate_dataset(folder, num_clips=2, seed=HELD_OUT_SEED, size=128, min_seconds=3.0, max_seconds=3.5,
                     framing="close_up", voices=[HELD_OUT_VOICE])
    settings = MeasureSettings(checkpoints={"toy": TOY_CHECKPOINT}, held_out=folder,
                               out=tmp_path_factory.mktemp("toy_measure"))
    held_out, (model,), cache = prepare(settings)
    records = interleave_by_clip(held_out_chunks(model, held_out, settings, cache))
    assert len({record.clip_id for record in records}) == 2
    return model, held_out, records


@pytest.fixture(scope="module")
def toy_chunks(toy_world):
    model, _, records = toy_world
    dataset = LatentAudioDataset(records)
    first = next(i for i, record in enumerate(records) if record.clip_id == records[0].clip_id)
    other = next(i for i, record in enumerate(records) if record.clip_id != records[0].clip_id)
    return model, records[first].fps, dataset[first], dataset[other]


def _velocities(denoiser, chunk, audios, fps):
    """The velocity the training loss predicts for each audio, at one fixed draw of sigma and noise."""
    predictions = []

    def recording(*args):
        predictions.append(denoiser(*args))
        return predictions[-1]

    for audio in audios:
        with torch.no_grad():
            rectified_flow_loss(denoiser, chunk["latents"][None], audio[None], fps, torch.Generator().manual_seed(3),
                                condition_probability=1.0, flow=FlowSection(shift=3.0), device=torch.device("cpu"),
                                forward=recording)
    return predictions


def test_committed_toy_checkpoint_loads_and_its_prediction_follows_the_speech(toy_chunks):
    model, fps, chunk, other = toy_chunks
    assert model.metadata["transformer_training"] == "lora" and model.base == str(TOY_BASE.resolve())
    denoiser = checkpoint_denoiser(model, torch.device("cpu"))
    own, foreign = _velocities(denoiser, chunk, [chunk["audio"], other["audio"]], fps)
    change = float((own - foreign).abs().mean() / own.abs().mean())
    print(f"velocity change with another clip's speech: {change:.4f} of its size")
    assert change > MIN_RELATIVE_CHANGE, change


def test_with_the_audio_path_cut_the_speech_changes_nothing(toy_chunks):
    model, fps, chunk, other = toy_chunks
    denoiser = checkpoint_denoiser(model, torch.device("cpu"))
    with torch.no_grad():
        for parameter in denoiser.audio_projection.parameters():
            parameter.zero_()
    own, foreign = _velocities(denoiser, chunk, [chunk["audio"], other["audio"]], fps)
    assert torch.equal(own, foreign)


def test_committed_toy_checkpoint_learned_the_speech_on_held_out_mouths(toy_world):
    """On clips it never saw (new figures, sentences and voice), the committed checkpoint's loss on the mouth's tokens
    is lower with the clip's own speech than with the other clip's, at the same noise draws."""
    model, held_out, records = toy_world
    denoiser = checkpoint_denoiser(model, torch.device("cpu"))
    truths = {clip.clip_id: clip.truth for clip in held_out.clips}
    weights = {record.key: mouth_token_weight(denoiser, record, truths[record.clip_id]) for record in records}

    def loss(latents, audio, record, generator):
        with torch.no_grad():
            return rectified_flow_loss(denoiser, latents, audio, record.fps, generator, condition_probability=1.0,
                                       flow=FlowSection(shift=3.0), device=torch.device("cpu"),
                                       token_weight=weights[record.key])

    figures = audio_gain(records, loss, num_draws=4, seed=0)  # (4: the standard error below)
    print(f"held-out mouth-token gain: {figures['audio_gain']:.6f} ± {figures['audio_gain_std']:.6f} "
          f"({figures['chunks']:.0f} chunks)")
    assert figures["audio_gain"] > MIN_MOUTH_GAIN, figures
    assert figures["audio_gain"] - 1 > 3 * figures["audio_gain_std"] / 4 ** 0.5, figures


# Mean absolute difference to the portrait (0-255) of the pixels away from the mouth, committed checkpoint, this file's
# first held-out clip, 4 steps from pure noise, guidance 5 (measured when mouth-only guidance became the default,
# 2026-11-30): 9.3
# guided on the mouth's tokens, 11.7 guided on the whole frame (the other clip: 9.2 and 12.0). The test asks for a
# tenth less: guidance that reached the whole frame again (or a region that silently became the frame) fails it.
MAX_OUTSIDE_MOUTH_RATIO = 0.9


def test_guidance_on_the_mouth_spares_the_rest_of_the_face(toy_world, tmp_path):
    """The default audio guidance acts on the mouth's tokens only: away from the mouth, a held-out figure stays closer
    to its portrait than when the same guidance acts on the whole frame (docs/results.md#the-toy-world)."""
    import numpy as np

    from avatar_gen.inference import AvatarGenerator
    from avatar_gen.media import read_frames

    _, held_out, _ = toy_world
    clip = held_out.clips[0]
    portrait = clip.first_frame()
    generator = AvatarGenerator.load(TOY_CHECKPOINT)
    away_from_mouth = {}
    for region in ("mouth", "frame"):
        result = generator.generate(portrait, audio=clip.video_path, output=tmp_path / f"{region}.mp4", steps=4,
                                    guidance=5.0, guidance_region=region, seed=0, start_sigma=1.0)
        frames = read_frames(result.video_path).astype(np.float64)
        if region == "mouth":
            assert result.guidance_region["region"] == "mouth"  # the figure's face was found
            height, width = frames.shape[1:3]
            left, top, right, bottom = (round(value * size) for value, size in
                                        zip(result.guidance_region["box"], (width, height, width, height), strict=True))
            away = np.ones(frames.shape[1:3], bool)
            away[max(0, top - 8):bottom + 8, max(0, left - 8):right + 8] = False  # the box and a token around it
        away_from_mouth[region] = float(np.abs(frames - portrait[None]).mean(-1)[:, away].mean())
    assert away_from_mouth["mouth"] < MAX_OUTSIDE_MOUTH_RATIO * away_from_mouth["frame"], away_from_mouth


# This file's first held-out clip, committed checkpoint, an 8-step schedule, guidance 3, seed 0 (measured 2026-11-30,
# when the start region was added; figures over many figures: docs/results.md, "The mouth from pure noise"): identity
# SSIM at the portrait's face box 0.73 from pure noise, 0.86 from the portrait at 0.5 with the mouth from pure noise,
# 0.96 from the portrait at 0.5 everywhere; offline sync@0 0.76, 0.75 and 0.36 (the other clip: identity 0.69 / 0.86 /
# 0.94, sync 0.67 / 0.68 / 0.25). The test asks for about half the identity gain (0.13) and half the sync gap (0.39):
# a start that no longer reaches the sampler, or a mouth that starts from the portrait again, fails it.
MIN_IDENTITY_GAIN_FROM_THE_PORTRAIT = 0.13 / 2
MIN_SYNC_KEPT_BY_THE_NOISE_MOUTH = 0.2


def test_starting_from_the_portrait_keeps_the_face_and_the_mouth_from_noise_keeps_it_speaking(toy_world, tmp_path):
    """Denoising from the portrait's still video noised to 0.5 keeps a held-out figure's face nearer its portrait than
    denoising from pure noise; started from the portrait too, the mouth barely follows the speech, while started from
    pure noise (the default start region) it follows it as from pure noise (docs/results.md, "Starting from the
    portrait")."""
    import numpy as np

    from avatar_gen.evaluation.quality import identity_at_portrait_face
    from avatar_gen.inference import AvatarGenerator
    from avatar_gen.media import read_frames
    from avatar_gen.toy.measure import score_video

    _, held_out, _ = toy_world
    clip, other = held_out.clips[:2]
    portrait = clip.first_frame()
    generator = AvatarGenerator.load(TOY_CHECKPOINT)
    identity, sync = {}, {}
    for name, start, region in (("noise", 1.0, None), ("mouth from noise", 0.5, "outside_mouth"),
                                ("all from portrait", 0.5, "frame")):
        result = generator.generate(portrait, audio=clip.video_path, output=tmp_path / f"{start}-{region}.mp4",
                                    steps=8, guidance=3.0, seed=0, start_sigma=start, start_region=region)
        found = identity_at_portrait_face(read_frames(result.video_path), portrait)
        assert found.region == "face"
        identity[name] = float(np.mean(found.per_frame))
        sync[name] = score_video(result.video_path, clip.speech_16k(), other.speech_16k(), portrait)["sync"]
    assert identity["mouth from noise"] > identity["noise"] + MIN_IDENTITY_GAIN_FROM_THE_PORTRAIT, identity
    assert identity["all from portrait"] > identity["noise"] + MIN_IDENTITY_GAIN_FROM_THE_PORTRAIT, identity
    assert sync["mouth from noise"] > sync["all from portrait"] + MIN_SYNC_KEPT_BY_THE_NOISE_MOUTH, sync

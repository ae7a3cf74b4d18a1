"""Media layer: ffmpeg, video decode/encode (PyAV + ffmpeg), frame cropping, 16 kHz WAV I/O."""

from avatar_gen.media.audio import SAMPLE_RATE, extract_audio, read_audio, resample_audio, rms_envelope, write_wav
from avatar_gen.media.ffmpeg import ffmpeg_dir, ffmpeg_exe, run_ffmpeg
from avatar_gen.media.frames import crop_box, fit_frames, resize_frames
from avatar_gen.media.video import VideoInfo, mux_audio, probe_video, read_frames, write_video

__all__ = [
    "SAMPLE_RATE", "VideoInfo", "crop_box", "extract_audio", "ffmpeg_dir", "ffmpeg_exe", "fit_frames", "mux_audio",
    "probe_video", "read_audio", "read_frames", "resample_audio", "resize_frames", "rms_envelope", "run_ffmpeg",
    "write_video", "write_wav",
]

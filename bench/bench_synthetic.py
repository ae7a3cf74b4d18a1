"""Synthetic data speed and quality: TTS real-time factor, generation seconds per 5 s clip at 256x256,
mouth/loudness correlation after AAC, Haar face hit rate, loopback server range throughput."""

from __future__ import annotations

import json
import tempfile
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np

from avatar_gen.audio.tts import synthesize
from avatar_gen.media import extract_audio, read_frames, rms_envelope
from avatar_gen.synthetic import generate_dataset, load_ground_truth, serve_directory

SENTENCE = "The quick brown fox jumps over the lazy dog, and then it runs back home before the evening."


def main() -> None:
    synthesize("warm up")
    started = time.perf_counter()
    speech = synthesize(SENTENCE)
    tts_s = time.perf_counter() - started

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        clips = generate_dataset(folder, num_clips=4, seed=0, min_seconds=5.0, max_seconds=5.0, two_face_clips=1)
        generate_s = time.perf_counter() - started
        correlations, hits = [], []
        for clip in clips:
            mouth = np.asarray(load_ground_truth(clip.ground_truth_path)["mouth_open"])
            envelope = rms_envelope(extract_audio(clip.video_path, 16000), 16000, clip.fps, clip.num_frames)
            correlations.append(float(np.corrcoef(mouth, envelope)[0, 1]))
            expected = 2 if clip.kind == "two_faces" else 1
            for frame in read_frames(clip.video_path)[::5]:
                gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
                hits.append(len(cascade.detectMultiScale(gray, 1.1, 5, minSize=(30, 30))) == expected)
        with serve_directory(Path(folder) / "clips") as url:
            target = f"{url}/{clips[0].clip_id}.mp4"
            requests_made, started = 0, time.perf_counter()
            while time.perf_counter() - started < 1.0:
                request = urllib.request.Request(target, headers={"Range": "bytes=0-4095"})
                with urllib.request.urlopen(request) as response:
                    response.read()
                requests_made += 1
            range_requests_per_s = requests_made / (time.perf_counter() - started)
    print(json.dumps({
        "tts_realtime_factor": round(speech.duration / tts_s, 1),
        "generate_s_per_5s_clip_256px": round(generate_s / len(clips), 2),
        "mouth_loudness_corr_min": round(min(correlations), 3),
        "mouth_loudness_corr_mean": round(float(np.mean(correlations)), 3),
        "haar_expected_faces_rate": round(float(np.mean(hits)), 3),
        "server_range_requests_per_s": round(range_requests_per_s, 1),
    }))


if __name__ == "__main__":
    main()

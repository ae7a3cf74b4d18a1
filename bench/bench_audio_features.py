"""Audio feature extraction speed on CPU with full-size models (random weights cost what real ones do).

wav2vec2-base (transformers' ``Wav2Vec2Config()`` defaults: hidden 768, 12 layers, last hidden state) and a
vocaset-shape FaceFormer, on 97-frame chunks at 25 fps (3.88 s each, the VAE stage's default chunk): one
chunk at a time vs ``encode_batch`` of all of them.  Real-time factor = compute seconds / audio seconds
(below 1 is faster than real time), by the wall clock and in CPU seconds of all threads.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import torch

from avatar_gen.audio.faceformer import VOCASET_CONFIG, FaceFormer
from avatar_gen.audio.features import AudioEncoderSpec, AudioFeatureEncoder
from avatar_gen.audio.framing import FrontEndTiming

NUM_CHUNKS = 4
NUM_FRAMES = 97
FPS = 25.0
SAMPLE_RATE = 16_000


def _time_encoder(encoder: AudioFeatureEncoder, audios: list[np.ndarray]) -> dict[str, float]:
    audio_seconds = NUM_CHUNKS * NUM_FRAMES / FPS
    encoder.encode(audios[0], NUM_FRAMES, FPS)  # warm-up: first-call allocations are not throughput
    started, started_cpu = time.perf_counter(), time.process_time()
    for audio in audios:
        encoder.encode(audio, NUM_FRAMES, FPS)
    one_by_one, one_by_one_cpu = time.perf_counter() - started, time.process_time() - started_cpu
    started, started_cpu = time.perf_counter(), time.process_time()
    encoder.encode_batch(audios, NUM_FRAMES, FPS)
    batched, batched_cpu = time.perf_counter() - started, time.process_time() - started_cpu
    # Wall-clock RTF is what a user waits; CPU-seconds RTF (all threads) is less disturbed by other load.
    return {"rtf_one_by_one": round(one_by_one / audio_seconds, 4), "rtf_batched": round(batched / audio_seconds, 4),
            "cpu_rtf_one_by_one": round(one_by_one_cpu / audio_seconds, 4),
            "cpu_rtf_batched": round(batched_cpu / audio_seconds, 4),
            "batched_speedup": round(one_by_one / batched, 2)}


def main() -> None:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    audios = [(0.1 * rng.standard_normal(int(NUM_FRAMES / FPS * SAMPLE_RATE))).astype(np.float32)
              for _ in range(NUM_CHUNKS)]
    config = Wav2Vec2Config()
    wav2vec2 = Wav2Vec2Model(config).eval()
    timing = FrontEndTiming.from_conv_stack(config.conv_kernel, config.conv_stride)
    wav2vec2_encoder = AudioFeatureEncoder(AudioEncoderSpec(name_or_path="random wav2vec2-base"), wav2vec2, timing,
                                           config.hidden_size, torch.device("cpu"), torch.float32)
    results = {"device": "cpu", "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "chunks": NUM_CHUNKS,
               "chunk": f"{NUM_FRAMES} frames @ {FPS:g} fps"}
    results["wav2vec2_base"] = _time_encoder(wav2vec2_encoder, audios)
    del wav2vec2_encoder, wav2vec2
    faceformer = FaceFormer(VOCASET_CONFIG).eval()
    faceformer_encoder = AudioFeatureEncoder(
        AudioEncoderSpec(encoder="faceformer", name_or_path="random vocaset-shape FaceFormer"), faceformer,
        faceformer.timing, VOCASET_CONFIG.feature_dim, torch.device("cpu"), torch.float32)
    results["faceformer_vocaset"] = _time_encoder(faceformer_encoder, audios)
    print(json.dumps(results))


if __name__ == "__main__":
    main()

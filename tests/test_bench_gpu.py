"""``python -m bench.gpu --smoke``: the GPU benchmark's code paths on tiny models on a CPU, in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# What the GPU machine can import without `make install` (docs/inference.md lists the wheels to carry).
ALLOWED_OWN_MODULES = {
    "avatar_gen", "avatar_gen.config", "avatar_gen.errors", "avatar_gen.ltx", "avatar_gen.utils", "avatar_gen.utils.io",
    "avatar_gen.utils.datafiles", "avatar_gen.utils.vae_space",
    "avatar_gen.inference", "avatar_gen.inference.schedule", "avatar_gen.inference.speed",
    "avatar_gen.inference.streaming", "avatar_gen.inference.sampler", "avatar_gen.inference.handoff",
    "avatar_gen.inference.guidance",
    "avatar_gen.utils.memory", "avatar_gen.model",
    "avatar_gen.model.audio_projection", "avatar_gen.model.alignment", "avatar_gen.model.caption",
    "avatar_gen.model.denoiser", "avatar_gen.model.flow", "avatar_gen.model.lora", "avatar_gen.model.sampling",
    "bench", "bench.gpu",
}
ABSENT_ON_THE_GPU_MACHINE = ("gradio", "av", "imageio_ffmpeg", "espeakng_loader", "whisper", "deepspeed", "soundfile")

RUNNER = """
import json, runpy, sys
sys.argv = ["bench.gpu", "--smoke", "--out", sys.argv[1]]
try:
    runpy.run_module("bench.gpu", run_name="__main__", alter_sys=True)
except SystemExit as stop:
    assert stop.code in (0, None), stop.code
sys.stderr.write("MODULES " + json.dumps(sorted(sys.modules)) + "\\n")
"""


def test_bench_gpu_smoke_writes_every_figure_with_few_imports(tmp_path):
    completed = subprocess.run([sys.executable, "-c", RUNNER, str(tmp_path)], cwd=REPO_ROOT, capture_output=True,
                               text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads([line for line in completed.stdout.splitlines() if line.startswith("{")][-1])
    modules = json.loads(completed.stderr.rsplit("MODULES ", 1)[1])

    own = {name for name in modules if name.split(".")[0] in ("avatar_gen", "bench")}
    assert own <= ALLOWED_OWN_MODULES, sorted(own - ALLOWED_OWN_MODULES)
    # soundfile may come through transformers' optional audio helpers; none of these may come through ours
    assert not [name for name in ABSENT_ON_THE_GPU_MACHINE[:-1] if name in modules]

    inference = report["inference"]
    for schedule in ("regular_2_guidance_3", "distilled_8"):
        figures = inference[f"{schedule}/compile_off"]
        assert 0 < figures["first_second_s"] <= figures["total_s"] and figures["chunks"] == 2
    assert inference["regular_2_guidance_3/compile_on"]["first_call_s"] > 0
    assert report["fp8"] == {"available": False, "reason": report["fp8"]["reason"]}
    assert "CUDA GPU" in report["fp8"]["reason"]
    assert report["training"]["checkpointing_on"]["s_per_step"] > 0
    assert report["stages"]["wav2vec2"]["audio_s_per_s"] > 0 and report["stages"]["vae_encode"]["frames_per_s"] > 0
    levers = report["levers"]
    assert {"overlap (engine without its worker thread / with)", "torch.compile (regular_2_guidance_3)",
            "attention: math kernel / native SDPA", "distilled 8 steps (speed-up over regular)", "VAE tiling, time",
            "VAE tiling, peak memory", "FP8 weights"} <= set(levers)
    assert str(levers["FP8 weights"]).startswith("unavailable")
    assert all(isinstance(value, float) and value > 0 for name, value in levers.items() if name != "FP8 weights")
    table = next(tmp_path.glob("gpu-*-smoke.md")).read_text()
    assert "| training step |" in table and "FP8 weights" in table
    assert json.loads(next(tmp_path.glob("gpu-*-smoke.json")).read_text())["levers"] == levers

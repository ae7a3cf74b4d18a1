"""The docs name only flags that exist: every ``--flag`` in README.md and docs/*.md is accepted by a script here.

Flag tables were replaced by each script's ``--help`` (defaults come from the config models); this keeps the prose
that remains from drifting away from the parsers.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = ["video_scraper/scrap_video.py", "preprocessing/save_vae_latents.py", "preprocessing/save_text_latents.py",
           "ltx_video/training.py", "ltx_video/inference.py", "ltx_video/evaluate.py", "app.py",
           "bench/bench_training.py", "bench/bench_vae_latents.py", "bench/bench_inference.py",
           "bench/bench_streaming.py", "bench/gpu.py"]
MODULES = ["avatar_gen.demo", "avatar_gen.synthetic.__main__", "avatar_gen.tiny.zoo"]
# Flags of other programs that the docs show in commands (deepspeed, torchrun, pip), and --help itself.
OTHER_PROGRAMS = {"--help", "--num_gpus", "--nproc_per_node", "--hostfile", "--no-build-isolation", "--no-index",
                  "--no-deps", "--target"}
# Accepted but hidden from --help: the deepspeed launcher appends it.
HIDDEN = {"--local_rank"}
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9_-]*")


def _main_of_script(relative_path: str, monkeypatch):
    spec = importlib.util.spec_from_file_location(Path(relative_path).stem + "_help", REPO / relative_path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.main


def _help_flags(main, capsys) -> set[str]:
    with pytest.raises(SystemExit):
        main(["--help"])
    return set(FLAG.findall(capsys.readouterr().out))


def test_every_flag_named_in_the_docs_exists(capsys, monkeypatch):
    known = set(OTHER_PROGRAMS | HIDDEN)
    for script in SCRIPTS:
        known |= _help_flags(_main_of_script(script, monkeypatch), capsys)
    for module in MODULES:
        known |= _help_flags(importlib.import_module(module).main, capsys)
    assert {"--csv_path", "--latents_dir", "--override", "--distilled", "--two_face_clips"} <= known
    unknown = {}
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for line_number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            for flag in set(FLAG.findall(line)) - known:
                unknown.setdefault(flag, f"{doc.relative_to(REPO)}:{line_number}")
    assert not unknown, f"flags in the docs that no script accepts: {unknown}"

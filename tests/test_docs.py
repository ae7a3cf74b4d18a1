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
           "preprocessing/save_mouth_boxes.py",
           "ltx_video/training.py", "ltx_video/inference.py", "ltx_video/evaluate.py", "app.py",
           "bench/bench_training.py", "bench/bench_vae_latents.py", "bench/bench_inference.py",
           "bench/bench_streaming.py", "bench/gpu.py", "bench/bench_alignment.py", "bench/bench_long_video.py"]
MODULES = ["avatar_gen.demo", "avatar_gen.synthetic.__main__", "avatar_gen.tiny.zoo"]
# Modules whose flags belong to subcommands: each subcommand's --help is read.
SUBCOMMANDS = {"avatar_gen.toy.__main__": ["pretrain", "measure", "measure-long", "speech-ceiling"]}
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
    for module, commands in SUBCOMMANDS.items():
        main = importlib.import_module(module).main
        for command in commands:
            known |= _help_flags(lambda argv, main=main, command=command: main([command, *argv]), capsys)
    assert {"--csv_path", "--latents_dir", "--override", "--distilled", "--two_face_clips", "--held_out",
            "--sweep_guidance", "--timing_chunks"} <= known
    unknown = {}
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for line_number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            for flag in set(FLAG.findall(line)) - known:
                unknown.setdefault(flag, f"{doc.relative_to(REPO)}:{line_number}")
    assert not unknown, f"flags in the docs that no script accepts: {unknown}"


RESULT_FIGURE = re.compile(r"(?<![\d.])\d+\.\d{3}(?!\d)")
# A line talks about a learning result when it names the measure or the alignment (betas 0.999 do not).
ABOUT_RESULTS = re.compile(r"gain|alignment|global|local", re.IGNORECASE)


def test_each_measured_result_lives_in_one_place():
    """docs/results.md is the one home of the learning figures: none of its three-decimal figures is repeated on a
    line about gains or alignment in another page, the README, a config or a test, and the alignment default is the
    one its evidence supports."""
    from avatar_gen.training.config import AudioSection, load_train_config

    results = (REPO / "docs" / "results.md").read_text(encoding="utf-8")
    figures = set(RESULT_FIGURE.findall(results))
    assert {"1.004", "3.064", "1.008"} <= figures
    elsewhere = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "configs").glob("*.yaml")),
                 *sorted((REPO / "tests").glob("test_*.py"))]
    repeated = set()
    for path in elsewhere:
        if path.name in ("results.md", Path(__file__).name):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if ABOUT_RESULTS.search(line):
                repeated |= {f"{path.relative_to(REPO)}:{number}: {figure}"
                             for figure in set(RESULT_FIGURE.findall(line)) & figures}
    assert not repeated, f"figures of docs/results.md stated again elsewhere: {sorted(repeated)}"
    recommended = re.search(r"\*\*Default: `audio.alignment: (\w+)`\*\*", results).group(1)
    assert AudioSection.model_fields["alignment"].default == recommended
    for config in ("train-avatars.yaml", "train-tiny.yaml"):
        assert load_train_config(REPO / "configs" / config).audio.alignment == recommended

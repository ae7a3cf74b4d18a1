"""Run every benchmark in this folder (``make bench``) and collect their JSON lines.

    python -m bench                 # all of them
    python -m bench training vae    # those whose file name contains a word

Each benchmark runs in its own process (so peak-memory figures are its own) and its JSON line is
appended to ``bench/results/results.jsonl`` with the machine it ran on.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    scripts = sorted(p for p in HERE.glob("bench_*.py") if not words or any(w in p.stem for w in words))
    results_file = HERE / "results" / "results.jsonl"
    results_file.parent.mkdir(exist_ok=True)
    failures = 0
    for script in scripts:
        started = time.time()
        completed = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
        lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
        if completed.returncode != 0 or not lines:
            failures += 1
            sys.stderr.write(f"{script.name} failed (exit {completed.returncode}):\n{completed.stderr[-3000:]}\n")
            continue
        figures = json.loads(lines[-1])
        record = {"benchmark": script.stem, "machine": platform.node(), "cpu_count": __import__("os").cpu_count(),
                  "seconds": round(time.time() - started, 1), "figures": figures,
                  "date": time.strftime("%Y-%m-%dT%H:%M:%S")}
        sys.stdout.write(json.dumps(record) + "\n")
        with open(results_file, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())

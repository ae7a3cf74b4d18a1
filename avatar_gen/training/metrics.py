"""What a run reports while it trains: ``metrics.jsonl`` (one JSON row per logged step), TensorBoard, peak memory."""

from __future__ import annotations

import json
import math
import resource
from pathlib import Path
from typing import Any

import torch

from avatar_gen.utils.io import atomic_write_text

METRICS_FILE = "metrics.jsonl"


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of a run's ``metrics.jsonl``; a line cut short by a killed run is dropped, not fatal."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated GPU memory, or the process's peak resident memory on CPU (MiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class MetricsLog:
    """The run's rows in memory, and on rank 0 (``is_main``) in ``metrics.jsonl`` and TensorBoard."""

    def __init__(self, output_dir: Path, is_main: bool):
        self.path = output_dir / METRICS_FILE
        self.output_dir, self.is_main = output_dir, is_main
        self.history: list[dict[str, Any]] = []
        self.writer = None
        # metrics.jsonl is rewritten once per process (dropping rows past a resumed step), then appended to.
        self.file_synced = False

    def keep_until(self, step: int) -> None:
        """Resuming at ``step``: the rows the file has up to it (an interrupted run may have logged past it)."""
        self.history = [row for row in read_metrics(self.path) if row.get("step", 0) <= step]

    def open_tensorboard(self, enabled: bool, step: int) -> None:
        """TensorBoard from ``step`` on (the steps done): events an earlier process logged past it (a run killed
        before its next checkpoint) are purged, so no step appears twice."""
        if self.is_main and enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.output_dir / "tensorboard"), purge_step=step + 1)

    def record(self, row: dict[str, Any], kind: str, step: int) -> None:
        """Append ``row`` (non-finite numbers become null) under ``kind`` (``train``, ``validation``)."""
        row = {key: (value if not isinstance(value, float) or math.isfinite(value) else None)
               for key, value in row.items()}
        row["kind"] = kind
        self.history.append(row)
        if not self.is_main:
            return
        if self.writer is not None:
            for key, value in row.items():
                if key not in ("step", "kind") and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{kind}/{key}", value, step)
        if self.file_synced:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
        else:
            atomic_write_text(self.path, "".join(json.dumps(item) + "\n" for item in self.history))
            self.file_synced = True

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

"""Peak memory over a stretch of work (one chunk of a long video): what grows with length shows here.

On a CUDA device the peak of ``torch.cuda.max_memory_allocated`` (tensors; the caching allocator's reserve is left
out); elsewhere the process's peak resident set (Linux ``VmHWM``, which ``/proc/self/clear_refs`` resets).  Both are
process-wide counters, so a reset also resets them for anyone else measuring in the same process: measure only
when asked.  Torch only (``python -m bench.gpu`` may import it on a bare GPU machine).
"""

from __future__ import annotations

from pathlib import Path

import torch

CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")


class PeakMemory:
    """``reset()`` before the work, ``read()`` after it: the peak in MiB in between, None where it cannot be read.

    ``kind``: ``cuda_allocated``, ``process_peak_rss`` or ``unavailable``.
    """

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.kind = "cuda_allocated" if self.device.type == "cuda" else "process_peak_rss"

    def reset(self) -> None:
        if self.kind == "cuda_allocated":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.kind == "process_peak_rss":
            try:
                CLEAR_REFS.write_text("5")  # "5": the peak resident set starts again from the current one
            except OSError:
                self.kind = "unavailable"

    def read(self) -> float | None:
        if self.kind == "cuda_allocated":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.kind == "process_peak_rss":
            try:
                for line in STATUS.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024  # kB
            except OSError:
                pass
            self.kind = "unavailable"
        return None

"""The process's resident memory (Linux /proc/self): its high-water mark reset and read. A run's peak
(attnlab.run.callbacks) and a bench point's (attnlab.bench.memory) are both measured this way. Where
/proc cannot say (macOS), `reset_peak` is False and `status_bytes` None."""

from __future__ import annotations

import re
from pathlib import Path

from attnlab.attention.cpu import trim_heap

PROC_STATUS = Path("/proc/self/status")
PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


def status_bytes(key: str) -> int | None:
    """A memory line of /proc/self/status in bytes (VmRSS: resident now, VmHWM: its high-water mark)."""
    try:
        found = re.search(rf"^{key}:\s+(\d+)\s+kB", PROC_STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(found.group(1)) * 1024 if found else None


def reset_peak() -> bool:
    """Start the high-water mark (VmHWM) from the memory resident now; False where it cannot be reset.
    The heap the process freed but kept is handed back first: else it would stay counted in the mark."""
    trim_heap()
    try:
        PROC_CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return status_bytes("VmHWM") is not None

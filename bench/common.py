"""What every benchmark section shares: sizes, the data block, modes."""

from __future__ import annotations

import os
from pathlib import Path

MIB = 1024 * 1024
NOTES: set[str] = set()  # caveats found while measuring, printed with the report
BLOCK = os.urandom(16 * MIB)  # files are this block repeated: no generator cost inside the timing
WRITE = 1 * MIB  # the size of each write and of each HTTP body chunk

MODES = {
    "quick": {
        "sizes": [4 * MIB],
        "ballast": 32 * MIB,
        "memory": 32 * MIB,
        "models": 500,
        "fl_repeats": 1,
        "seconds": 2,
        "levels": [1, 16],
    },
    "full": {
        "sizes": [16 * MIB, 256 * MIB, 1024 * MIB],
        "ballast": 512 * MIB,
        "memory": 1024 * MIB,
        "models": 10_000,
        "fl_repeats": 3,
        "seconds": 10,
        "levels": [1, 16, 64],
    },
}


def chunks(size: int) -> list[memoryview]:
    view = memoryview(BLOCK)
    out, left = [], size
    while left:
        n = min(WRITE, left)
        offset = (size - left) % len(BLOCK)
        n = min(n, len(BLOCK) - offset)
        out.append(view[offset : offset + n])
        left -= n
    return out


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of process `pid` so far (0 when unknown or gone)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

"""FerretDB's CPU per GridFS upload and download through the API, for one or more FerretDB binaries.

For each repetition and each `--ferretdb-bin [LABEL=]PATH` (their order alternating between
repetitions), a fresh `flrepo serve --embedded` (bench/store.py's Service) takes `--n` uploads of a
`--mib` file (PUT /model/NAME/1: the first stores it, the others replace it), each followed by a
download (GET), and the ferretdb process's user + system CPU (/proc/PID/stat) is read around each
transfer; the service's own CPU beside it. Prints every transfer's figures, then each binary's CPU
seconds per upload and per download (median of all its transfers, and the range of the repetitions'
medians).

Usage: python bench/store_cpu.py --ferretdb-bin old=/path/to/ferretdb --ferretdb-bin new=tools/bin/ferretdb \
           [--mib 64] [--n 3] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import cpu_seconds
from bench.store import MIB, Service, ferretdb_bins, large


def measure(binary: Path, workdir: Path, mib: int, n: int) -> dict[str, list[float]]:
    """CPU seconds of ferretdb and of the service per upload and per download, n of each."""
    svc = Service(binary, workdir)
    out: dict[str, list[float]] = {"ferretdb up": [], "ferretdb down": [], "service up": [], "service down": []}
    try:
        svc.register("cpu")
        svc.put("cpu", b"warm-up")
        svc.get("cpu")
        for _ in range(n):
            for direction in ("up", "down"):
                f0, s0 = cpu_seconds(svc.ferretdb_pid), cpu_seconds(svc.proc.pid)
                if direction == "up":
                    svc.put("cpu", large(mib))
                elif (got := svc.get("cpu")) != mib * MIB:
                    raise RuntimeError(f"GET returned {got} bytes, not {mib * MIB}")
                time.sleep(0.2)  # let ferretdb finish what the reply left (e.g. a replaced file's delete)
                out[f"ferretdb {direction}"].append(cpu_seconds(svc.ferretdb_pid) - f0)
                out[f"service {direction}"].append(cpu_seconds(svc.proc.pid) - s0)
    finally:
        svc.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ferretdb-bin", action="append", required=True, metavar="[LABEL=]PATH")
    parser.add_argument("--mib", type=int, default=64, help="file size (default 64)")
    parser.add_argument("--n", type=int, default=3, help="uploads and downloads per service (default 3)")
    parser.add_argument("--repeats", type=int, default=2, help="fresh services per binary (default 2)")
    args = parser.parse_args()
    bins = ferretdb_bins(parser, args.ferretdb_bin)
    runs: dict[str, list[dict[str, list[float]]]] = {label: [] for label, _ in bins}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for label, binary in bins if rep % 2 == 0 else bins[::-1]:
                got = measure(binary, Path(tmp) / f"{label}-{rep}", args.mib, args.n)
                runs[label].append(got)
                cells = ", ".join(f"{k} {' '.join(f'{x:.2f}' for x in v)}" for k, v in got.items())
                print(f"rep {rep + 1} {label}: CPU s per {args.mib} MiB, each transfer: {cells}", flush=True)
    print(f"\nCPU seconds per {args.mib} MiB transfer (median of all; range of the repetitions' medians):")
    for label, reps in runs.items():
        parts = []
        for key in ("ferretdb up", "ferretdb down", "service up", "service down"):
            every = [x for r in reps for x in r[key]]
            medians = [statistics.median(r[key]) for r in reps]
            parts.append(f"{key} {statistics.median(every):.2f} ({min(medians):.2f}-{max(medians):.2f})")
        print(f"  {label}: " + ", ".join(parts))


if __name__ == "__main__":
    main()

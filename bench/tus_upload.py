"""Time to upload one file with one PUT and with tus (the SDK's resumable path), against `flrepo serve`
on an embedded FerretDB: prints seconds and MiB/s of each. Usage: python bench/tus_upload.py [--mib 12]"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from flrepo.client import RepositoryClient
from flrepo.server.embedded import api_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, api_server(Path(tmp)) as (url, _):
        source = Path(tmp) / "model.bin"
        source.write_bytes(os.urandom(args.mib * 1024 * 1024))
        for label, threshold in (("PUT", 2**62), ("tus", 1)):
            with RepositoryClient(url, tus_threshold=threshold) as repo:
                times = []
                for n in range(args.repeats):
                    repo.create_model("bench", f"{label}{n}", library="numpy")
                    start = time.perf_counter()
                    repo.upload_model("bench", f"{label}{n}", source)
                    times.append(time.perf_counter() - start)
                best = min(times)
                print(f"{label}: {args.mib} MiB in {best:.2f} s best of {args.repeats} ({args.mib / best:.0f} MiB/s)")


if __name__ == "__main__":
    main()

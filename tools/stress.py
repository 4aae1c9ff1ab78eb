"""Run a command several times in a row while CPU burners keep the machine busy.

`make test-stress` runs the process tests (the FL runtime's and the CLI's subprocesses) this way: a
test that depends on timing rather than on events fails here first. Usage:

    python tools/stress.py [--burners 2] [--runs 3] -- COMMAND ...

Exits with the first failing run's status (later runs are not started), else 0. Each run's wall time
is printed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

BURN = "while True:\n    pass\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burners", type=int, default=2, help="CPU-bound processes beside the command (default 2)")
    parser.add_argument("--runs", type=int, default=3, help="times the command runs in a row (default 3)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")
    burners = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(args.burners)]
    try:
        for run in range(1, args.runs + 1):
            started = time.monotonic()
            code = subprocess.call(command)
            print(
                f"stress run {run}/{args.runs}: exit {code} in {time.monotonic() - started:.0f} s, "
                f"{args.burners} CPU burners beside it",
                flush=True,
            )
            if code != 0:
                return code
        return 0
    finally:
        for burner in burners:  # only the processes started here
            burner.kill()
            burner.wait()


if __name__ == "__main__":
    sys.exit(main())

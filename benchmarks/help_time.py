"""Wall time of ``gnn-cml --help`` and every ``gnn-cml <command> --help`` (target: under 1.5 s).

Each command runs in a fresh interpreter (``python -m gnn_cml.cli ... --help``), as a user's
shell would start it; the median of a few repeats is reported, and which heavy modules
(torch, torch_geometric, matplotlib, scipy) the help path imported.

    python benchmarks/help_time.py              # 5 repeats
    python benchmarks/help_time.py --repeats 3
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = [[], ["train"], ["evaluate"], ["datasets"], ["reproduce"], ["reproduce", "table3"],
            ["reproduce", "regression"], ["reproduce", "omniglot"]]
HEAVY = ("torch", "torch_geometric", "matplotlib", "scipy")
LIMIT_S = 1.5
_PROBE = """
import contextlib, io, sys
from gnn_cml.cli import build_parser
with contextlib.redirect_stdout(io.StringIO()):
    try:
        build_parser().parse_args(sys.argv[1:] + ["--help"])
    except SystemExit:
        pass
print(",".join(sorted({m.split(".")[0] for m in sys.modules} & set(%r))))
""" % (HEAVY,)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per command (default 5)")
    args = parser.parse_args(argv)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, "-m", "gnn_cml.cli", "--help"], env=env, capture_output=True)  # warm the disk
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; median of {args.repeats} fresh processes")
    print(f"{'command':<40} {'median s':>9} {'max s':>7}  heavy imports")
    worst = 0.0
    for command in COMMANDS:
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "gnn_cml.cli", *command, "--help"], env=env,
                                  capture_output=True, text=True)
            times.append(time.perf_counter() - start)
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                return 1
        heavy = subprocess.run([sys.executable, "-c", _PROBE, *command], env=env, capture_output=True,
                               text=True).stdout.strip() or "none"
        median = statistics.median(times)
        worst = max(worst, median)
        label = " ".join(["gnn-cml", *command, "--help"])
        print(f"{label:<40} {median:>9.2f} {max(times):>7.2f}  {heavy}")
    print(f"slowest median: {worst:.2f} s ({'under' if worst < LIMIT_S else 'OVER'} the {LIMIT_S} s target)")
    return 0 if worst < LIMIT_S else 1


if __name__ == "__main__":
    sys.exit(main())

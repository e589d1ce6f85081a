"""Protocol 03's report (issue 27, point 7) from the study folders that hold its runs:

    python benchmarks/fidelity_report.py benchmarks/results/study benchmarks/results/study_seeds \
        --out benchmarks/results/study_pooled/fidelity.md

(:mod:`evidence.fidelity`: every seed of O, O+ and P at epoch 50, paired and Welch intervals,
the protocol's verdicts and explanation rule, per-epoch differences, the commits.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evidence.fidelity import fidelity_lines  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("studies", nargs="+", type=Path, help="study folders (runs/ inside)")
    p.add_argument("--out", type=Path, help="write the report here (else print it)")
    args = p.parse_args(argv)
    text = "\n".join(fidelity_lines(args.studies)) + "\n"
    if args.out:
        args.out.write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

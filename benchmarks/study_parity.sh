#!/usr/bin/env bash
# Issue 26, training parity: benchmarks/protocols/04_pipeline_parity.md (committed before the
# first run): EffSSL and SimCLR, each through data.pipeline=pil and data.pipeline=tensor, in
# protocol 01's regime with protocol 01's learning rates, seeds 0-2, then a linear probe of
# every finished run; validation split only. Every step skips finished runs and resumes
# partial ones, so this script can be killed and started again at any time; the report
# ($OUT/report.md, its "Pipeline parity" table) is rebuilt after each run.
#
# Run it from a pinned copy of the code that has data.pipeline=tensor:
#   git worktree add <pin3> <commit>; mkdir -p <logs>
#   pip install --no-deps --no-build-isolation --target <pin3>_site <pin3>
#   cd <pin3> && PIN_SITE=<pin3>_site \
#       OUT=<repo>/benchmarks/results/pipeline_parity \
#       LR_SEARCH=<repo>/benchmarks/results/lr_search OMP_NUM_THREADS=1 \
#       nohup setsid nice -n 19 bash benchmarks/study_parity.sh \
#       >> <logs>/parity.log 2>&1 &
# Stop: touch "$OUT/PAUSE"; remove it and start the same command to continue.
set -u -o pipefail
OUT=${OUT:-benchmarks/results/pipeline_parity}
LR_SEARCH=${LR_SEARCH:-$(dirname "$OUT")/lr_search}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
COMMON=(--holdout 500 --split-seed 0 --eval-set val --fraction 0.1 --model mobilenetv3_small_100
        --batch 256 --epochs 15 --eval-epochs 5 10 15 --threads 1 --lr-search "$LR_SEARCH"
        --out "$OUT")
# shellcheck source=benchmarks/study_common.sh
. "$(dirname "$0")/study_common.sh"
use_pinned_code || exit 1
python benchmarks/study.py --plan pipeline_parity --seeds 0 1 2 "${COMMON[@]}" || exit 1
[ -e "$OUT/PAUSE" ] && { echo "PAUSE present: stopping"; exit 0; }
python benchmarks/study.py --linear --plan pipeline_parity --seeds 0 1 2 "${COMMON[@]}"

#!/usr/bin/env bash
# Issue 27, point 8: the same seed with the same code gives the same curve. Reruns seed 0 of
# protocol 02's short budget (EffSSL 15 epochs, stopped after 10; SimCLR 9; EffSSL 9) into a
# second folder, with the same arms (the reference's step-cost CSV and protocol 01's
# choices), from the same pinned commit as the reference runs, then compares every
# evaluation and the commits (benchmarks/compare_runs.py; $OUT/comparison.md). Resumable
# as every study runner; run it from the reference's pinned worktree, after the reference
# runs have finished:
#   cd <pin2> && PIN_SITE=<pin2>_site \
#       REF=<repo>/benchmarks/results/equal_compute \
#       OUT=<repo>/benchmarks/results/reproducibility \
#       LR_SEARCH=<repo>/benchmarks/results/lr_search OMP_NUM_THREADS=1 \
#       nohup setsid nice -n 19 bash <repo>/benchmarks/study_repro.sh \
#       >> <logs>/repro.log 2>&1 &
set -u -o pipefail
OUT=${OUT:-benchmarks/results/reproducibility}
REF=${REF:-$(dirname "$OUT")/equal_compute}
LR_SEARCH=${LR_SEARCH:-$(dirname "$OUT")/lr_search}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
COMMON=(--holdout 500 --split-seed 0 --eval-set val --fraction 0.1 --model mobilenetv3_small_100
        --batch 256 --epochs 50 --eval-epochs 5 10 15 20 25 30 35 40 45 50 --threads 1
        --lr-search "$LR_SEARCH" --step-cost "$REF/step_cost_cpu_mobilenetv3_small_100_b256.csv"
        --out "$OUT")
# shellcheck source=benchmarks/study_common.sh
. "$(dirname "$0")/study_common.sh"
use_pinned_code || exit 1
python benchmarks/study.py --arms "${COMMON[@]}" || exit 1
python benchmarks/study.py --plan equal_compute_short --seeds 0 --stop-after 10 "${COMMON[@]}" \
    || exit 1
[ -e "$OUT/PAUSE" ] && { echo "PAUSE present: stopping"; exit 0; }
python "$(dirname "$0")/compare_runs.py" "$REF" "$OUT" | tee "$OUT/comparison.md"

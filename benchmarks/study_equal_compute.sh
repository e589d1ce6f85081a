#!/usr/bin/env bash
# Issue 27, step 2: EffSSL against SimCLR at equal compute and at equal epochs, in the order of
# benchmarks/protocols/02_equal_compute.md (committed before the first run):
#   1. the step cost (benchmarks/step_cost.py, CPU float32, 5,000 bank rows), once, if its CSV
#      is missing: ON AN OTHERWISE IDLE MACHINE (nothing else running, not even another study;
#      the script refuses to measure unless IDLE=1 says the machine is idle); commit the CSV;
#   2. the arms fixed from it and from protocol 01's learning-rate choices ($OUT/arms.json;
#      stops with the reason if protocol 01's search has not chosen for EffSSL or SimCLR yet);
#   3. the short budget's arms, seeds 0-2, then their final measures on the test set;
#   4. the long budget's arms, seeds 0-2, then their final measures;
#   5. seeds 3 and 4 of both budgets, then their final measures.
# Every step skips finished runs and measures and resumes partial runs, so this script can be
# killed and started again at any time; $OUT/equal_compute.md is rebuilt after each step.
#
# Run it from a pinned copy of the code, so that work on the repository cannot change it
# mid-run (as protocol 01's "Running it"):
#   git worktree add <pin2> <commit>; mkdir -p <logs>
#   pip install --no-deps --no-build-isolation --target <pin2>_site <pin2>
#   cd <pin2> && PIN_SITE=<pin2>_site \
#       OUT=<repo>/benchmarks/results/equal_compute \
#       LR_SEARCH=<repo>/benchmarks/results/lr_search OMP_NUM_THREADS=1 \
#       nohup setsid nice -n 19 bash benchmarks/study_equal_compute.sh \
#       >> <logs>/equal_compute.log 2>&1 &
# The first start measures the step cost: stop every other job first and add IDLE=1.
# Stop: touch "$OUT/PAUSE" (no new run starts; a running one stops after its current epoch's
# checkpoint); remove it and start the same command to continue.
set -u -o pipefail
OUT=${OUT:-benchmarks/results/equal_compute}
LR_SEARCH=${LR_SEARCH:-$(dirname "$OUT")/lr_search}
STEP_COST=$OUT/step_cost_cpu_mobilenetv3_small_100_b256.csv
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
COMMON=(--holdout 500 --split-seed 0 --eval-set val --fraction 0.1 --model mobilenetv3_small_100
        --batch 256 --epochs 50 --eval-epochs 5 10 15 20 25 30 35 40 45 50 --threads 1
        --lr-search "$LR_SEARCH" --step-cost "$STEP_COST" --out "$OUT")
# where the code comes from: the pinned copy when PIN_SITE is set, else the checkout
# shellcheck source=benchmarks/study_common.sh
. "$(dirname "$0")/study_common.sh"
use_pinned_code || exit 1
mkdir -p "$OUT"
paused() { [ -e "$OUT/PAUSE" ] && echo "PAUSE present: stopping" ; }

# 1. the step cost, once, on an otherwise idle machine (the protocol's c_E and c_S)
measure_step_cost "$OUT" "$STEP_COST" --device cpu --model mobilenetv3_small_100 --batch 256 \
    --size 32 --samples 5000 --negatives -1 --methods effssl simclr backbone \
    --rounds 6 --steps 3 || exit 1

# 2. the arms (learning rates by protocol 01's rule, epochs by the step cost), fixed once
python benchmarks/study.py --arms "${COMMON[@]}" || exit 1

# 3-5. the runs in the budget's order, each batch followed by its final measures
batch() {  # batch "<plans>" <seeds...>: the plans' runs of these seeds, then their measures
    local plans=$1
    shift
    paused && return 1
    python benchmarks/study.py --plan $plans --seeds "$@" "${COMMON[@]}"
    paused && return 1
    python benchmarks/study.py --final-measures --plan $plans --seeds "$@" "${COMMON[@]}"
}
batch "equal_compute_short" 0 1 2 || exit 0
batch "equal_compute_long" 0 1 2 || exit 0
batch "equal_compute_short equal_compute_long" 3 4 || exit 0

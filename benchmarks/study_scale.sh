#!/usr/bin/env bash
# Issue 27, point 6: EffSSL against SimCLR at equal compute in two more regimes, in the order of
# benchmarks/protocols/05_scale_and_backbone.md (committed before its first run). R2 (the 40%
# share, mobilenetv3_small_100, EffSSL num_negatives 10000) before R3 (resnet18 on the 10%
# share), each a study of its own in $ROOT/R2 and $ROOT/R3; for each regime:
#   1. its step cost (benchmarks/step_cost.py, CPU float32, one thread, its own model, bank rows
#      and negatives), once, if its CSV is missing, before the regime's first run: ON AN
#      OTHERWISE IDLE MACHINE (nothing else running, not even another study; the script
#      refuses to measure unless IDLE=1 says the machine is idle); commit the CSV;
#   2. its arms E (EffSSL, 15 epochs) and S (SimCLR, round(15 x c_E / c_S) epochs), fixed from
#      that CSV and protocol 01's learning-rate choices ($ROOT/<regime>/arms.json);
#   3. seed 0's E and S, then their final measures on the test set; then seed 1's; then seed 2's.
# R1 is protocol 02's short budget, read from $EQUAL_COMPUTE (never written here). Every step
# skips finished runs and measures and resumes partial runs, so this script can be killed and
# started again at any time; $ROOT/report.md (and scale.png) is rebuilt after each step.
#
# Run it from a pinned copy of the code, so that work on the repository cannot change it
# mid-run (as protocol 01's "Running it"):
#   git worktree add <pin5> <commit>; mkdir -p <logs>
#   pip install --no-deps --no-build-isolation --target <pin5>_site <pin5>
#   cd <pin5> && PIN_SITE=<pin5>_site ROOT=<repo>/benchmarks/results/scale \
#       LR_SEARCH=<repo>/benchmarks/results/lr_search \
#       EQUAL_COMPUTE=<repo>/benchmarks/results/equal_compute OMP_NUM_THREADS=1 \
#       nohup setsid nice -n 19 bash benchmarks/study_scale.sh >> <logs>/scale.log 2>&1 &
# A regime's first start measures its step cost: stop every other job first and add IDLE=1.
# R3's measurement comes after R2's runs: without IDLE=1 the script stops there and says so.
# Stop: touch "$ROOT/<regime>/PAUSE" (the running regime's: no new run starts and a running one
# stops after its current epoch's checkpoint), or "$ROOT/PAUSE" (no new step starts; a running
# run goes on to its end); remove it and start the same command to continue.
set -u -o pipefail
ROOT=${ROOT:-benchmarks/results/scale}
LR_SEARCH=${LR_SEARCH:-$(dirname "$ROOT")/lr_search}
EQUAL_COMPUTE=${EQUAL_COMPUTE:-$(dirname "$ROOT")/equal_compute}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# where the code comes from: the pinned copy when PIN_SITE is set, else the checkout
# shellcheck source=benchmarks/study_common.sh
. "$(dirname "$0")/study_common.sh"
use_pinned_code || exit 1
mkdir -p "$ROOT"
paused() { { [ -e "$ROOT/PAUSE" ] || [ -e "$1/PAUSE" ]; } && echo "PAUSE present: stopping" ; }

# regime <name>: steps 1-3 for one regime, whose plan, share, model, EffSSL's negatives and
# step-cost options come from benchmarks/evidence/scale.py (REGIMES, defined there only);
# returns 0 when done or paused, 1 when a step failed: a failed run lets the other seeds go on,
# but the next regime waits (R2 before R3) until a new start has finished it (a run that
# diverged counts as finished then; runs.log has the errors)
regime() {
    local name=$1 settings plan fraction model negatives seed failed=0 cost_options
    local out=$ROOT/$name
    settings=$(cd "$(dirname "$0")" && python -m evidence.scale "$name") || return 1
    read -r plan fraction model negatives <<< "${settings%%$'\n'*}"
    read -r -a cost_options <<< "${settings#*$'\n'}"
    local cost=$out/step_cost_cpu_${model}_b256.csv
    local common=(--holdout 500 --split-seed 0 --eval-set val --fraction "$fraction"
        --model "$model" --negatives "$negatives" --batch 256 --epochs 15 --eval-epochs 5 10 15
        --threads 1 --lr-search "$LR_SEARCH" --step-cost "$cost"
        --equal-compute "$EQUAL_COMPUTE" --out "$out")
    paused "$out" && return 0
    # 1. the step cost, once, on an otherwise idle machine (the regime's c_E and c_S), before
    # the regime's first run: never after one
    if [ ! -f "$cost" ] && [ -d "$out/runs" ]; then
        echo "$name has runs but no step-cost CSV at $cost: the protocol measures it before"
        echo "the regime's first run; restore the committed CSV (nothing is measured now)."
        return 1
    fi
    measure_step_cost "$out" "$cost" "${cost_options[@]}" || return 1
    # 2. the arms, fixed once
    python benchmarks/study.py --arms --plan "$plan" "${common[@]}" || return 1
    # 3. seed by seed: E and S, then their final measures
    for seed in 0 1 2; do
        paused "$out" && return 0
        python benchmarks/study.py --plan "$plan" --seeds "$seed" "${common[@]}" || failed=1
        paused "$out" && return 0
        python benchmarks/study.py --final-measures --plan "$plan" --seeds "$seed" \
            "${common[@]}" || failed=1
    done
    [ "$failed" = 0 ] || echo "$name: a step failed (see $out/runs.log); start again to retry"
    return "$failed"
}
regime R2 || exit 1
paused "$ROOT/R2" && exit 0
regime R3 || exit 1

#!/usr/bin/env bash
# EffSSL against SimCLR on the full CIFAR-10 training set, timm resnet18 (low-resolution
# stem), one GPU, each arm a full schedule at equal compute: the step costs are measured
# first (benchmarks/step_cost.py, in-memory data), then each arm gets as many epochs as
# BUDGET_S seconds of its measured steps buy, and its cosine schedule ends at its own last
# epoch. Each arm is one run of benchmarks/study.py's launcher worker (study.py takes one
# --epochs for all the arms of a plan), with the study's offline kNN (k=200, T=0.07, the
# 10,000 test images against the training images) at every fifth of its schedule and its last
# epoch.
#
# A device call lasts at most 600 s, so the arms run in two calls (gpu_prepare.sh suite
# prints them); each stops itself after LIMIT_S seconds:
#   PART=1 bash benchmarks/gpu_suite.sh        # step costs, then the effssl arm
#   PART=2 EPOCHS_EFFSSL=E EPOCHS_SIMCLR=S bash benchmarks/gpu_suite.sh   # the simclr arm
# (E and S as part 1 printed: both arms then share one step-cost measurement.) PART=all runs
# both arms in one call with a smaller default budget. $OUT receives suite_part<PART>.log and
# suite_part<PART>.tar.gz (step costs, evals.csv and time.csv of each arm, its logs).
#
# CPU path (tiny): DEVICE=cpu MODEL=resnet10t BATCH=16 FRACTION=0.002 BUDGET_S=2 PART=all \
#     DATA_DIR=<folder with CIFAR-10's train/ and test/> bash benchmarks/gpu_suite.sh
#
# Settings (environment): PART, DEVICE, MODEL, BATCH, NEGATIVES, FRACTION, BUDGET_S, WORKERS,
# EPOCHS_EFFSSL, EPOCHS_SIMCLR, DATA_DIR (else the carried .gpu/cifar10_jpg_q75.tar.gz, or
# ../shared/data's), LIMIT_S, WORK, OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benchmarks/gpu_common.sh
. benchmarks/gpu_common.sh

PART=${PART:-all}
case "$PART" in 1) ARMS=(effssl) ;; 2) ARMS=(simclr) ;; all) ARMS=(effssl simclr) ;;
    *) echo "PART must be 1, 2 or all" >&2; exit 2 ;; esac
DEVICE=${DEVICE:-cuda}
MODEL=${MODEL:-resnet18}
BATCH=${BATCH:-512}
NEGATIVES=${NEGATIVES:-10000}   # effssl k (run.sh); -1 = all rows
FRACTION=${FRACTION:-1}         # share of the 50,000 training images
BUDGET_S=${BUDGET_S:-$([ "$PART" = all ] && echo 100 || echo 240)}
CORES=$(nproc)
WORKERS=${WORKERS:-$(( CORES > 2 ? CORES - 2 : 1 ))}
LIMIT_S=${LIMIT_S:-570}
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/effssl_suite.XXXXXX")}
OUT=${OUT:-$WORK/out}
MACHINE=auto
STEP_ARGS=(--rounds 3 --steps 5)
if [ "$DEVICE" = cpu ]; then MACHINE=cpu; STEP_ARGS=(--rounds 1 --steps 1); fi
RES=$WORK/results
mkdir -p "$OUT" "$RES"

left() { echo $(( LIMIT_S - SECONDS )); }

suite() {
    echo "== effssl vs simclr at equal compute: PART=$PART DEVICE=$DEVICE MODEL=$MODEL" \
        "BATCH=$BATCH NEGATIVES=$NEGATIVES FRACTION=$FRACTION BUDGET_S=$BUDGET_S" \
        "WORKERS=$WORKERS LIMIT_S=$LIMIT_S WORK=$WORK"
    echo "== setup ($(date -u +%T))"
    gpu_setup
    local data=${DATA_DIR:-}
    if [ -z "$data" ]; then
        local archive=$GPU_DIR/cifar10_jpg_q75.tar.gz
        [ -f "$archive" ] || archive=../shared/data/cifar10_jpg_q75.tar.gz
        data=$WORK/cifar10
        gpu_extract "$archive" "$data"
    fi
    local images
    images=$(awk -v f="$FRACTION" \
        'BEGIN {n = int(50000 * f); print (n > 0 && n < 50000 ? n : 50000)}')
    # study.py's stratified share (sklearn's train_test_split) can differ by an image or two:
    # the epoch length only sets how many epochs the budget buys

    local effssl_epochs=${EPOCHS_EFFSSL:-} simclr_epochs=${EPOCHS_SIMCLR:-}
    if [ -z "$effssl_epochs" ] || [ -z "$simclr_epochs" ]; then
        echo
        echo "== step costs ($DEVICE, $MODEL, batch $BATCH, bank of $images rows; ${SECONDS}s)"
        timeout "$(left)" "$PY" benchmarks/step_cost.py --device "$DEVICE" --model "$MODEL" \
            --batch "$BATCH" --samples "$images" --negatives "$NEGATIVES" \
            --methods effssl simclr backbone "${STEP_ARGS[@]}" --out "$RES"
        local csv
        csv=$(ls "$RES"/step_cost_"$DEVICE"_"$MODEL"_b"$BATCH".csv)
        "$PY" benchmarks/gpu_checks.py epochs --csv "$csv" --budget "$BUDGET_S" \
            --train-images "$images" --batch "$BATCH" --methods effssl simclr >"$RES/epochs.txt"
        effssl_epochs=${EPOCHS_EFFSSL:-$(awk '$1 == "effssl" {print $2}' "$RES/epochs.txt")}
        simclr_epochs=${EPOCHS_SIMCLR:-$(awk '$1 == "simclr" {print $2}' "$RES/epochs.txt")}
    fi
    echo "epochs: effssl $effssl_epochs, simclr $simclr_epochs (budget $BUDGET_S s of" \
        "measured steps each)"
    echo "next part: PART=2 EPOCHS_EFFSSL=$effssl_epochs EPOCHS_SIMCLR=$simclr_epochs" \
        "bash benchmarks/gpu_suite.sh"

    local arm epochs eval_epochs arms_left=${#ARMS[@]} failed=0 limit rc
    for arm in "${ARMS[@]}"; do
        epochs=$effssl_epochs
        [ "$arm" = simclr ] && epochs=$simclr_epochs
        # every fifth of the schedule and its last epoch
        eval_epochs=$( (seq "$(( epochs / 5 > 0 ? epochs / 5 : 1 ))" \
            "$(( epochs / 5 > 0 ? epochs / 5 : 1 ))" "$epochs"; echo "$epochs") | sort -nu \
            | tr '\n' ' ')
        limit=$(( ($(left) - 15) / arms_left ))
        arms_left=$(( arms_left - 1 ))
        echo
        echo "== $arm: $epochs epochs, kNN after epochs $eval_epochs(time limit ${limit}s;" \
            "${SECONDS}s used)"
        if [ "$limit" -le 30 ]; then
            echo "no time left for $arm"
            failed=1
            continue
        fi
        rc=0
        # shellcheck disable=SC2086  # eval_epochs is a list of numbers
        timeout "$limit" "$PY" benchmarks/study.py --worker --method "$arm" --variant default \
            --seed 0 --epochs "$epochs" --eval-epochs $eval_epochs --fraction "$FRACTION" \
            --model "$MODEL" --batch "$BATCH" --negatives "$NEGATIVES" --workers "$WORKERS" \
            --machine "$MACHINE" --data-dir "$data" --out "$RES/study_$arm" || rc=$?
        echo "$arm: exit status $rc$([ "$rc" -eq 124 ] && echo " (stopped by its time limit)")"
        [ "$rc" -eq 0 ] || failed=1
    done

    echo
    echo "== results (${SECONDS}s)"
    "$PY" benchmarks/gpu_checks.py suite-summary "$RES"/study_* \
        --planned "effssl=$effssl_epochs" "simclr=$simclr_epochs" || failed=1
    (cd "$WORK" && find results -type f ! -name '*.ckpt' ! -name '*.ckpt.tmp' ! -name '*.pt' \
        ! -name '*.safetensors' | tar -czf - -T -) >"$OUT/suite_part$PART.tar.gz" || true
    echo "wrote $OUT/suite_part$PART.log and $OUT/suite_part$PART.tar.gz"
    return "$failed"
}

suite 2>&1 | tee "$OUT/suite_part$PART.log"

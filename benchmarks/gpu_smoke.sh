#!/usr/bin/env bash
# The GPU smoke test: about 6 minutes on one GPU, setup included. Each step is logged under a
# header; a failed step is recorded and the next one runs; the summary gives each step's
# result and the exit status is non-zero if any step failed.
#
#   0 setup: python3, the carried wheels (gpu_prepare.sh), the CIFAR-10 subset
#   1 tests/test_step_sync.py and tests/test_augment.py -k cuda (no host sync in the step; the
#     batched augmentation on CUDA equals the CPU's; a skip is a failure)
#   2 pretrain, the real launcher (main_pretrain.py --config-name effssl), max_epochs=3
#     stopped after 2 epochs (++max_steps: an interruption at a known point), the default
#     precision with the online kNN; then the online val_knn_acc1 of epoch 2 against an
#     offline float32 effssl-knn of the checkpoint, within KNN_TOL points (default 15: the
#     online kNN's reference features are the epoch's augmented views in train mode, the
#     offline one's the clean images in eval mode; measured on a CPU in float32, resnet18,
#     1,000 images, 2 epochs: online 21.0, offline 28.2), and the same offline kNN with its
#     features given in float16 and bfloat16, within KNN_DTYPE_TOL points (default 1) of
#     float32 (the kNN before its float32 fix gave 10.0 on float16 features there)
#   3 the same command again, without the stop: the launcher's auto-resume (which matches
#     max_epochs, as solo-learn's) continues that run for its third epoch: resumed at epoch
#     2, in the same run directory, the bank on the training device from start to end
#   4 one epoch each: bank_update=ema, num_negatives=-1, bank_dtype=bfloat16,
#     bank_matmul=bfloat16, precision=bf16-mixed, precision=16-mixed, checkpoint.bank=bfloat16
#     (its checkpoint's bank must be bfloat16); in parallel on a GPU (PARALLEL=1)
#   5 2 epochs with data.val_path=null: memory after each epoch (CUDA allocated/peak/reserved,
#     nvidia-smi, process RSS); fails if the online kNN keeps training features or CUDA memory
#     allocated grows by more than MAX_GROWTH_MIB from epoch 1 to epoch 2
#   6 benchmarks/step_cost.py for effssl, simclr and the bare backbone
#   7 an out-of-range index fed to the memory bank on CUDA (update_ema, fill_, the training
#     step's batch_columns): the error a user gets
#   8 data.pipeline=tensor's batched augmentation on the device, images a second, against the
#     training step's (resnet18, batch 512, 32 px; issue 26), then 1 epoch of the launcher
#     with data.pipeline=tensor
#
# On a device machine (gpu_prepare.sh prints the call):
#   run(command="bash benchmarks/gpu_smoke.sh", carry=[".gpu"], timeout_s=600)
# $OUT receives smoke.log, summary.txt and smoke_results.tar.gz (logs, metrics, probes; no
# checkpoints). CPU path (steps 1 and 7 are "skipped: no CUDA"), tiny settings:
#   DEVICE=cpu DATA_DIR=<folder with train/ and test/> OUT=/tmp/smoke bash benchmarks/gpu_smoke.sh
#
# Settings (environment): DEVICE (cuda | cpu), DATA_DIR (else the carried subset), MODEL,
# BATCH, NEGATIVES, WORKERS, KNN_K, KNN_TOL, KNN_DTYPE_TOL, MAX_GROWTH_MIB, PARALLEL, LIMIT_S
# (the script's own time limit, under the call's), STEPS (which to run), EXTRA (more launcher
# overrides, space-separated), WORK (working folder: data, runs; default a new temporary one).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benchmarks/gpu_common.sh
. benchmarks/gpu_common.sh

DEVICE=${DEVICE:-cuda}
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/effssl_smoke.XXXXXX")}
OUT=${OUT:-$WORK/out}
LIMIT_S=${LIMIT_S:-560}
STEPS=${STEPS:-1 2 3 4 5 6 7 8}  # a rerun of some: STEPS="2 3" (3 continues 2's run)
KNN_K=${KNN_K:-200}
CORES=$(nproc)
if [ "$DEVICE" = cuda ]; then
    MODEL=${MODEL:-resnet18}
    BATCH=${BATCH:-256}
    NEGATIVES=${NEGATIVES:-4096}   # < 5,000 rows of the subset minus a batch
    WORKERS=${WORKERS:-$(( CORES > 4 ? CORES - 2 : 2 ))}
    KNN_TOL=${KNN_TOL:-15}
    KNN_DTYPE_TOL=${KNN_DTYPE_TOL:-1}
    PARALLEL=${PARALLEL:-1}
    MAX_GROWTH_MIB=${MAX_GROWTH_MIB:-16}  # live tensors at two epoch ends: no growth expected
    STEP_ARGS=(--rounds 2 --steps 5)
    RATE_ARGS=(--model resnet18 --batch 512 --precision bf16-mixed)
    MACHINE=()                     # machine=auto: the GPU with the default precision
else
    MODEL=${MODEL:-resnet10t}
    BATCH=${BATCH:-8}
    NEGATIVES=${NEGATIVES:-8}
    WORKERS=${WORKERS:-0}
    KNN_TOL=${KNN_TOL:-100}        # a handful of images: the plumbing, not the numbers
    KNN_DTYPE_TOL=${KNN_DTYPE_TOL:-100}
    PARALLEL=${PARALLEL:-0}
    MAX_GROWTH_MIB=${MAX_GROWTH_MIB:-64}
    STEP_ARGS=(--rounds 1 --steps 1 --samples 64 --negatives 8)
    RATE_ARGS=(--model "$MODEL" --batch 16 --precision 32-true --samples 64 --iters 2 --steps 1)
    MACHINE=(machine=cpu)
    EXTRA=${EXTRA:-method_kwargs.proj_hidden_dim=64 method_kwargs.proj_output_dim=32}
fi
read -r -a EXTRA_ARGS <<<"${EXTRA:-}"
RES=$WORK/results
mkdir -p "$OUT" "$RES"
: >"$OUT/summary.txt"
NAMES=()
RESULTS=()

left() { echo $(( LIMIT_S - SECONDS )); }

# record NUMBER NAME RESULT
record() {
    NAMES+=("$1 $2")
    RESULTS+=("$3")
    printf '%s %s: %s\n' "$1" "$2" "$3" | tee -a "$OUT/summary.txt"
}

# step NUMBER NAME FUNCTION [cuda]: runs FUNCTION in a subshell with errexit; a non-zero
# status fails the step, and the next step runs
step() {
    local n=$1 name=$2 fn=$3 needs=${4:-} rc=0
    echo
    echo "== [$n/8] $name  ($(date -u +%T), ${SECONDS}s of ${LIMIT_S}s used)"
    if [[ " $STEPS " != *" $n "* ]]; then
        record "$n" "$name" "skipped: not in STEPS"
        return 0
    fi
    if [ "$needs" = cuda ] && [ "$DEVICE" != cuda ]; then
        record "$n" "$name" "skipped: no CUDA"
        return 0
    fi
    if [ "${SETUP_OK:-1}" != 1 ]; then
        record "$n" "$name" "FAIL: setup failed"
        return 0
    fi
    if [ "$(left)" -le 15 ]; then
        record "$n" "$name" "FAIL: no time left (LIMIT_S=$LIMIT_S)"
        return 0
    fi
    set +e
    (set -e; "$fn")
    rc=$?
    set -e
    case $rc in
        0) record "$n" "$name" "PASS" ;;
        124 | 137) record "$n" "$name" "FAIL: timed out (LIMIT_S=$LIMIT_S)" ;;
        *) record "$n" "$name" "FAIL: exit status $rc" ;;
    esac
}

common_overrides() {
    COMMON=("${MACHINE[@]}" dataset=custom_lowres "data.train_path='$DATA/train'"
        "data.num_workers=$1" "backbone.kwargs.model_name=$MODEL" "optimizer.batch_size=$BATCH"
        "method_kwargs.num_negatives=$NEGATIVES" "knn_eval.k=$KNN_K" +enable_progress_bar=false
        "${EXTRA_ARGS[@]}")
}

# launch CKPT_DIR EPOCHS OVERRIDE...: the real launcher, as a user runs it
launch() {
    local dir=$1 epochs=$2
    shift 2
    echo "\$ $PY main_pretrain.py --config-name effssl ${COMMON[*]} checkpoint.dir='$dir'" \
        "max_epochs=$epochs $*"
    timeout "$(left)" "$PY" main_pretrain.py --config-name effssl "${COMMON[@]}" \
        "checkpoint.dir='$dir'" "max_epochs=$epochs" "$@"
}

the_run_dir() {  # the one run directory under $1/effssl
    local dirs
    dirs=("$1"/effssl/*/)
    [ "${#dirs[@]}" -eq 1 ] && [ -d "${dirs[0]}" ] || {
        echo "expected one run directory in $1/effssl, found: ${dirs[*]}" >&2
        return 1
    }
    echo "${dirs[0]%/}"
}

# ---------------------------------------------------------------------------- steps
s_sync() {
    local log=$RES/sync_test.txt
    timeout "$(left)" "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_step_sync.py \
        tests/test_augment.py -k cuda 2>&1 | tee "$log"
    if grep -Eq '[0-9]+ skipped' "$log"; then
        echo "a skipped test is a failure on a CUDA machine" >&2
        return 1
    fi
    grep -Eq '[0-9]+ passed' "$log"
}

s_pretrain() {
    local images steps
    images=$(find "$DATA/train" -type f | wc -l)
    steps=$(( (images / BATCH) * 2 ))  # 2 epochs (the loader drops the last partial batch)
    launch "$WORK/runs/main" 3 "data.val_path='$DATA/test'" "++max_steps=$steps" 2>&1 \
        | tee "$RES/pretrain.log"
    local run_dir
    run_dir=$(the_run_dir "$WORK/runs/main")
    echo "$run_dir" >"$WORK/main_run_dir"
    timeout "$(left)" "$PY" benchmarks/gpu_checks.py knn-agree "$run_dir" --tol "$KNN_TOL" \
        --dtype-tol "$KNN_DTYPE_TOL" --k "$KNN_K" --device "$DEVICE" --workers "$WORKERS" \
        --out "$RES/knn_offline.json" 2>&1 | tee "$RES/knn_agree.txt"
}

s_resume() {
    local run_dir
    run_dir=$(cat "$WORK/main_run_dir")
    # the same command without the stop: the launcher's auto-resume finds the run
    timeout "$(left)" "$PY" benchmarks/gpu_checks.py train --probe "$RES/resume_probe.json" \
        --expect-start-epoch 2 --expect-bank-device "$DEVICE" --expect-run-dir "$run_dir" -- \
        "${COMMON[@]}" "data.val_path='$DATA/test'" "checkpoint.dir='$WORK/runs/main'" \
        max_epochs=3 2>&1 | tee "$RES/resume.log"
    grep -q "Resuming from previous checkpoint" "$RES/resume.log"
}

VARIANTS=(method_kwargs.bank_update=ema method_kwargs.num_negatives=-1
    method_kwargs.bank_dtype=bfloat16 method_kwargs.bank_matmul=bfloat16 precision=bf16-mixed
    precision=16-mixed checkpoint.bank=bfloat16)

s_variants() {
    local v name pids=() names=() failed=0 i
    for v in "${VARIANTS[@]}"; do
        if [ "$v" = precision=16-mixed ] && [ "$DEVICE" != cuda ]; then
            echo "variant $v: skipped: no CUDA (Lightning's 16-mixed needs a GPU)"
            continue
        fi
        name=${v//[^A-Za-z0-9_-]/_}
        if [ "$PARALLEL" = 1 ]; then
            launch "$WORK/runs/$name" 1 "data.val_path='$DATA/test'" "$v" \
                >"$RES/variant_$name.log" 2>&1 &
            pids+=($!)
        else
            launch "$WORK/runs/$name" 1 "data.val_path='$DATA/test'" "$v" \
                >"$RES/variant_$name.log" 2>&1 && pids+=(0) || pids+=(1)
        fi
        names+=("$v")
    done
    for i in "${!names[@]}"; do
        v=${names[$i]}
        name=${v//[^A-Za-z0-9_-]/_}
        local rc=0
        if [ "$PARALLEL" = 1 ]; then
            wait "${pids[$i]}" || rc=$?
        else
            rc=${pids[$i]}
        fi
        echo "-- variant $v: exit status $rc; the end of its log:"
        tr '\r' '\n' <"$RES/variant_$name.log" | tail -n 25
        if [ "$rc" -eq 0 ] && [ "$v" = checkpoint.bank=bfloat16 ]; then
            "$PY" benchmarks/gpu_checks.py ckpt-bank "$(the_run_dir "$WORK/runs/$name")" \
                --dtype bfloat16 || rc=1
        fi
        if [ "$rc" -eq 0 ]; then
            echo "variant $v: PASS"
        else
            echo "variant $v: FAIL"
            failed=1
        fi
    done
    return "$failed"
}

s_noval() {
    timeout "$(left)" "$PY" benchmarks/gpu_checks.py train --probe "$RES/noval_probe.json" \
        --no-knn-features --max-growth-mib "$MAX_GROWTH_MIB" --expect-bank-device "$DEVICE" -- \
        "${COMMON[@]}" data.val_path=null "checkpoint.dir='$WORK/runs/noval'" max_epochs=2 \
        2>&1 | tee "$RES/noval.log"
}

s_step_cost() {
    timeout "$(left)" "$PY" benchmarks/step_cost.py --device "$DEVICE" --model "$MODEL" \
        --batch "$BATCH" --methods effssl simclr backbone "${STEP_ARGS[@]}" \
        --out "$RES/step_cost" 2>&1 | tee "$RES/step_cost.log"
}

s_bank_oob() {
    local case failed=0
    for case in ema fill columns; do  # one process each: a device-side assert ends a context
        timeout 120 "$PY" benchmarks/gpu_checks.py bank-oob --device cuda --case "$case" 2>&1 \
            | tee -a "$RES/bank_oob.txt" || failed=1
    done
    return "$failed"
}

s_pipeline() {
    timeout "$(left)" "$PY" benchmarks/gpu_checks.py pipeline-rate --device "$DEVICE" \
        "${RATE_ARGS[@]}" --out "$RES/pipeline_rate.json" 2>&1 | tee "$RES/pipeline_rate.log"
    launch "$WORK/runs/tensor" 1 "data.val_path='$DATA/test'" data.pipeline=tensor 2>&1 \
        | tee "$RES/tensor_pipeline.log"
}

# ---------------------------------------------------------------------------- main
main() {
    echo "== effssl GPU smoke: DEVICE=$DEVICE MODEL=$MODEL BATCH=$BATCH NEGATIVES=$NEGATIVES" \
        "WORKERS=$WORKERS KNN_K=$KNN_K KNN_TOL=$KNN_TOL KNN_DTYPE_TOL=$KNN_DTYPE_TOL" \
        "PARALLEL=$PARALLEL LIMIT_S=$LIMIT_S" \
        "WORK=$WORK"
    echo "== [0/8] setup  ($(date -u +%T))"
    SETUP_OK=1
    # in this shell (its exports must stay), each command checked inside the functions
    if gpu_setup && { [ -n "${DATA_DIR:-}" ] ||
        gpu_extract "$GPU_DIR/cifar10_subset.tar.gz" "$WORK/data"; }; then
        record 0 setup PASS
    else
        record 0 setup FAIL
        SETUP_OK=0
    fi
    DATA=${DATA_DIR:-$WORK/data}
    local per_run=$(( PARALLEL == 1 ? (WORKERS / 7 > 1 ? WORKERS / 7 : 1) : WORKERS ))

    common_overrides "$WORKERS"
    step 1 "sync test (tests/test_step_sync.py -k cuda)" s_sync cuda
    step 2 "pretrain 2 of 3 epochs + online kNN against offline effssl-knn" s_pretrain
    step 3 "auto-resume for the third epoch, bank on $DEVICE" s_resume
    common_overrides "$per_run"
    step 4 "one epoch per variant" s_variants
    common_overrides "$WORKERS"
    step 5 "2 epochs without validation, memory per epoch" s_noval
    step 6 "step cost of effssl, simclr and the bare backbone" s_step_cost
    step 7 "out-of-range bank index on CUDA" s_bank_oob cuda
    step 8 "data.pipeline=tensor, augmentation images/s against the step's" s_pipeline

    echo
    echo "== summary ($DEVICE, ${SECONDS}s)"
    local i passed=0 failed=0 skipped=0
    for i in "${!NAMES[@]}"; do
        echo "${NAMES[$i]}: ${RESULTS[$i]}"
        case ${RESULTS[$i]} in
            PASS) passed=$((passed + 1)) ;;
            skipped*) skipped=$((skipped + 1)) ;;
            *) failed=$((failed + 1)) ;;
        esac
    done
    echo "smoke: $passed passed, $failed failed, $skipped skipped" | tee -a "$OUT/summary.txt"
    cp "$OUT/summary.txt" "$RES/"
    # results without checkpoints: logs, metrics.csv, args.json, probes, step costs
    (cd "$WORK" && find results runs -type f ! -name '*.ckpt' ! -name '*.ckpt.tmp' \
        ! -name '*.safetensors' ! -name '*.pt' 2>/dev/null | tar -czf - -T -) \
        >"$OUT/smoke_results.tar.gz" || true
    echo "wrote $OUT/smoke.log, $OUT/summary.txt, $OUT/smoke_results.tar.gz"
    [ "$failed" -eq 0 ]
}

set -o pipefail
main 2>&1 | tee "$OUT/smoke.log"

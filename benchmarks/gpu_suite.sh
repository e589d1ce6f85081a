#!/usr/bin/env bash
# One GPU, under 10 minutes: EffSSL against SimCLR on the full CIFAR-10 training set with
# timm resnet18 (low-resolution stem), kNN per epoch and per wall-clock minute (the study's
# report compares them at equal minutes), and the step cost of every method.
# Writes CSV, PNG and report.md under $OUT (default benchmarks/results/gpu).
#
#   bash benchmarks/gpu_suite.sh                                    # on a GPU machine
#   DEVICE=cpu MODEL=mobilenetv3_small_100 EPOCHS=1 FRACTION=0.02 NEGATIVES=-1 BATCH=64 STEP_BATCH=32 OUT=/tmp/gpu_smoke bash benchmarks/gpu_suite.sh   # CPU smoke
#
# Needs the CIFAR-10 JPEG archive in ../shared/data (or DATA_DIR with train/ and test/).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
MODEL=${MODEL:-resnet18}
BATCH=${BATCH:-512}
STEP_BATCH=${STEP_BATCH:-256}
EPOCHS=${EPOCHS:-15}                  # per method; kNN after every third epoch and the last
FRACTION=${FRACTION:-1}               # share of the 50,000 training images
NEGATIVES=${NEGATIVES:-10000}         # effssl k (run.sh); -1 = all rows (a small FRACTION)
WORKERS=${WORKERS:-$(( $(nproc) > 2 ? $(nproc) - 2 : 1 ))}
OUT=${OUT:-benchmarks/results/gpu}
DATA_DIR=${DATA_DIR:-$HOME/.cache/effssl/cifar10}
MACHINE=auto
STEP_ARGS=(--rounds 3 --steps 5)
if [ "$DEVICE" = cpu ]; then MACHINE=cpu; STEP_ARGS=(--rounds 1 --steps 1 --samples 2000); fi
EVAL_EPOCHS=$( (seq 3 3 "$EPOCHS"; echo "$EPOCHS") | sort -nu | tr '\n' ' ')  # and the last
mkdir -p "$OUT"
{ date; nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"; } > "$OUT/machine.txt"

if [ "$DEVICE" = cuda ]; then
    echo "== no host sync in the training step (torch.cuda.set_sync_debug_mode)"
    python -m pytest -q tests/test_step_sync.py -k cuda 2>&1 | tee "$OUT/sync_debug.txt" || true
fi

echo "== step cost ($DEVICE, $MODEL, batch $STEP_BATCH)"
python benchmarks/step_cost.py --device "$DEVICE" --model "$MODEL" --batch "$STEP_BATCH" "${STEP_ARGS[@]}" --out "$OUT"

echo "== effssl vs simclr, $EPOCHS epochs each, CIFAR-10 share $FRACTION"
# shellcheck disable=SC2086  # EVAL_EPOCHS is a list of numbers
python benchmarks/study.py --plan main --seeds 0 --machine "$MACHINE" --model "$MODEL" \
    --fraction "$FRACTION" --batch "$BATCH" --epochs "$EPOCHS" --eval-epochs $EVAL_EPOCHS \
    --negatives "$NEGATIVES" --workers "$WORKERS" --data-dir "$DATA_DIR" --out "$OUT/study"
echo "results in $OUT"

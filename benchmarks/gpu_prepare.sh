#!/usr/bin/env bash
# Run HERE (a machine with pip and ../shared), before a device call: fills the ignored folder
# .gpu/ at the repository root with what a fresh GPU machine lacks, then prints the device
# call to make. A device machine reaches no package index and does not receive ../shared.
#
#   bash benchmarks/gpu_prepare.sh           # smoke: wheels + CIFAR-10 subset (~3 MiB)
#   bash benchmarks/gpu_prepare.sh suite     # also the full CIFAR-10 archive (19.6 MB)
#
# .gpu/wheels/   pure-Python wheels for the device's Python 3.12: hydra-core, omegaconf and
#                antlr4-python3-runtime (the versions installed here, which the tests ran
#                with; antlr4 4.9.3 exists only as a source archive, so it is built here),
#                and solo-learn from ../shared/wheels. The device image has torch, Lightning,
#                timm, torchmetrics, einops, safetensors, huggingface-hub, scipy,
#                scikit-learn, matplotlib and pytest (.library/device/KINDS.md).
# .gpu/cifar10_subset.tar.gz   10% of CIFAR-10's training images (500 per class) and 2,000
#                test images (200 per class), JPEG folders train/<class>/, test/<class>/.
# .gpu/cifar10_jpg_q75.tar.gz  (suite) all of CIFAR-10, extracted on the device.
#
# This package itself is not built as a wheel: the working tree travels with every call,
# and the scripts put it first on PYTHONPATH, so the device always runs the current code
# (a wheel built earlier could be stale).
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT=${1:-smoke}
case "$WHAT" in smoke | suite) ;; *) echo "usage: $0 [smoke|suite]" >&2; exit 2 ;; esac
PY=${PYTHON:-python3}
GPU_DIR=${GPU_DIR:-.gpu}
SHARED=${SHARED:-../shared}
ARCHIVE=$SHARED/data/cifar10_jpg_q75.tar.gz
SOLO_WHEEL=$SHARED/wheels/solo_learn-1.0.6-py3-none-any.whl
TRAIN_PER_CLASS=${TRAIN_PER_CLASS:-500}
TEST_PER_CLASS=${TEST_PER_CLASS:-200}
LIMIT_MIB=64

for f in "$ARCHIVE" "$SOLO_WHEEL"; do
    [ -f "$f" ] || { echo "error: $f not found" >&2; exit 1; }
done
if ! git check-ignore -q "$GPU_DIR/x"; then
    echo "error: $GPU_DIR is not ignored by git (.gitignore): it would travel as untracked" \
        "files and could be committed" >&2
    exit 1
fi

version() {  # the version installed here, else empty (pip then takes the newest)
    "$PY" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || true
}
pin() {
    local v
    v=$(version "$1")
    echo "$1${v:+==$v}"
}

rm -rf "$GPU_DIR/wheels"
mkdir -p "$GPU_DIR/wheels"
# pure-Python wheels only; the platform flags let pip fetch for the device's Python 3.12
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d "$GPU_DIR/wheels" "$(pin hydra-core)" "$(pin omegaconf)"
antlr=$(pin antlr4-python3-runtime)
if ! "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform any -d "$GPU_DIR/wheels" "$antlr" 2>/dev/null; then
    "$PY" -m pip wheel -q --no-deps -w "$GPU_DIR/wheels" "$antlr"  # sdist only (4.9.3)
fi
cp "$SOLO_WHEEL" "$GPU_DIR/wheels/"
for whl in "$GPU_DIR"/wheels/*; do
    case "$whl" in
        *-py3-none-any.whl | *-py2.py3-none-any.whl | *-cp312-*manylinux*x86_64.whl) ;;
        *) echo "error: $whl is not a wheel the device's Python 3.12 can install" >&2; exit 1 ;;
    esac
done

"$PY" benchmarks/gpu_checks.py subset "$ARCHIVE" "$GPU_DIR/cifar10_subset.tar.gz" \
    --train-per-class "$TRAIN_PER_CLASS" --test-per-class "$TEST_PER_CLASS"
if [ "$WHAT" = suite ]; then
    cp "$ARCHIVE" "$GPU_DIR/cifar10_jpg_q75.tar.gz"
else
    rm -f "$GPU_DIR/cifar10_jpg_q75.tar.gz"
fi

{
    echo "prepared $(date -u +%Y-%m-%dT%H:%MZ) at commit $(git rev-parse --short HEAD) ($WHAT)"
    (cd "$GPU_DIR" && find . -type f ! -name MANIFEST.txt -printf '%P %s bytes\n' | sort)
} >"$GPU_DIR/MANIFEST.txt"
cat "$GPU_DIR/MANIFEST.txt"

# what a device call sends: tracked files, untracked files git does not ignore, the carry
tree=$( { git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s -- \
    2>/dev/null || true; } | awk '{s += $1} END {print s + 0}')
carried=$(du -sb "$GPU_DIR" | cut -f1)
total=$(( (tree + carried) / 1048576 ))
echo "the call sends about $total MiB (tree $(( tree / 1048576 )) MiB + $GPU_DIR" \
    "$(( carried / 1048576 )) MiB; limit $LIMIT_MIB MiB)"
if [ "$total" -ge "$LIMIT_MIB" ]; then
    echo "error: over the device call's $LIMIT_MIB MiB" >&2
    exit 1
fi

echo
echo "Now call the device tool's run (not a shell command):"
if [ "$WHAT" = smoke ]; then
    echo "  run(command=\"bash benchmarks/gpu_smoke.sh\", carry=[\"$GPU_DIR\"], timeout_s=600)"
    echo "It stops itself after LIMIT_S=560 s; its log, summary and results come back in \$OUT."
else
    suite=benchmarks/gpu_suite.sh
    echo "  run(command=\"PART=1 bash $suite\", carry=[\"$GPU_DIR\"], timeout_s=600)"
    echo "  run(command=\"PART=2 EPOCHS_EFFSSL=<E> EPOCHS_SIMCLR=<S> bash $suite\"," \
        "carry=[\"$GPU_DIR\"], timeout_s=600)"
    echo "with E and S as part 1 printed ('epochs: effssl E, simclr S'), so both arms share"
    echo "one step-cost measurement."
fi

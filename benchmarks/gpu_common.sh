# shellcheck shell=bash
# Sourced by gpu_smoke.sh and gpu_suite.sh (from the repository root): python3 with what a
# fresh GPU machine lacks, installed from the wheels that gpu_prepare.sh put in $GPU_DIR.
#
#   PYTHON   the interpreter (default python3: a fresh device machine may have no `python`)
#   GPU_DIR  the folder gpu_prepare.sh filled and the device call carries (default .gpu)
#   SITE     where the carried wheels are installed (default: a new temporary folder)

PY=${PYTHON:-python3}
GPU_DIR=${GPU_DIR:-.gpu}

# gpu_setup: the carried wheels installed if hydra, omegaconf or solo-learn is missing; the
# repository first on PYTHONPATH, so `python3 benchmarks/x.py` and `python3 -m effssl_plugin.x`
# import this tree's code; a `git` stub where none is installed (study.py records the commit).
gpu_setup() {
    local missing
    missing=$("$PY" - <<'EOF'
import importlib.util as u
print(" ".join(m for m in ("hydra", "omegaconf", "antlr4", "solo") if u.find_spec(m) is None))
EOF
) || return 1
    if [ -n "$missing" ]; then
        echo "missing here: $missing; installing the wheels of $GPU_DIR/wheels"
        if ! compgen -G "$GPU_DIR/wheels/*.whl" >/dev/null; then
            echo "error: no wheels in $GPU_DIR/wheels: run 'bash benchmarks/gpu_prepare.sh'" \
                "on a machine with pip and carry $GPU_DIR" >&2
            return 1
        fi
        SITE=${SITE:-$(mktemp -d "${TMPDIR:-/tmp}/effssl_site.XXXXXX")}
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" "$GPU_DIR"/wheels/*.whl || return 1
        export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    fi
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    export PYTHONUNBUFFERED=1
    if ! command -v git >/dev/null; then
        local shim
        shim=$(mktemp -d "${TMPDIR:-/tmp}/effssl_git.XXXXXX")
        printf '#!/bin/sh\nexit 1\n' >"$shim/git" || return 1
        chmod +x "$shim/git" || return 1
        export PATH="$shim:$PATH"
    fi
    "$PY" - <<'EOF' || return 1
import platform
import warnings

warnings.filterwarnings("ignore")  # timm's and solo-learn's import warnings

import hydra
import lightning
import omegaconf
import solo
import timm
import torch

print(f"python {platform.python_version()}, torch {torch.__version__}, lightning "
      f"{lightning.__version__}, timm {timm.__version__}, hydra {hydra.__version__}, "
      f"omegaconf {omegaconf.__version__}, solo-learn from {solo.__file__}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"CUDA {torch.version.cuda}: {torch.cuda.device_count()} x {p.name}, "
          f"{p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}, "
          f"bf16 {torch.cuda.is_bf16_supported()}")
else:
    print("no CUDA device")
EOF
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv || true
    fi
    if [ -f "$GPU_DIR/MANIFEST.txt" ]; then
        echo "carried ($GPU_DIR/MANIFEST.txt):"
        sed 's/^/    /' "$GPU_DIR/MANIFEST.txt"
    fi
}

# gpu_extract ARCHIVE DEST: the archive's train/ and test/ folders in DEST (once).
gpu_extract() {
    local archive=$1 dest=$2
    if [ -d "$dest/train" ] && [ -d "$dest/test" ]; then
        return 0
    fi
    if [ ! -f "$archive" ]; then
        echo "error: $archive not found: run 'bash benchmarks/gpu_prepare.sh' here and carry" \
            "$GPU_DIR, or set DATA_DIR to a folder with train/ and test/" >&2
        return 1
    fi
    mkdir -p "$dest" || return 1
    tar -xzf "$archive" -C "$dest" || return 1
    echo "extracted $archive: $(find "$dest/train" -type f | wc -l) train and" \
        "$(find "$dest/test" -type f | wc -l) test images in $dest"
}

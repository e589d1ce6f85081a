#!/usr/bin/env bash
# Issue 27, step 1: the symmetric learning-rate search on the held-out validation split, in the
# order of benchmarks/protocols/01_lr_search.md (committed before the first run): the untrained
# backbone on the split, then SimCLR's grid, EffSSL's, BYOL's, MoCo v2+'s, each followed by the
# one extension its rule may ask for. Every step skips finished runs and resumes partial ones,
# so this script can be killed and started again at any time.
#
# Run it from a pinned copy of the code, so that work on the repository cannot change it
# mid-run (the protocol's "Running it"):
#   git worktree add <pin> <commit>; mkdir -p <logs>
#   pip install --no-deps --no-build-isolation --target <pin>_site <pin>
#   cd <pin> && PIN_SITE=<pin>_site \
#       OUT=<repo>/benchmarks/results/lr_search OMP_NUM_THREADS=1 \
#       nohup setsid nice -n 19 bash benchmarks/study_lr_search.sh \
#       >> <logs>/lr_search.log 2>&1 &
# Stop: touch "$OUT/PAUSE" (no new run starts; a running one stops after its current epoch's
# checkpoint); remove it and start the same command to continue.
set -u
OUT=${OUT:-benchmarks/results/lr_search}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
COMMON=(--holdout 500 --split-seed 0 --eval-set val --fraction 0.1 --model mobilenetv3_small_100
        --batch 256 --epochs 15 --eval-epochs 5 10 15 --threads 1 --out "$OUT")
# where the code comes from: the pinned copy when PIN_SITE is set, else the checkout
# shellcheck source=benchmarks/study_common.sh
. "$(dirname "$0")/study_common.sh"
use_pinned_code || exit 1
python benchmarks/study.py --random-init --seeds 0 1 2 "${COMMON[@]}"
python benchmarks/study.py --plan lr_simclr lr_effssl lr_byol lr_mocov2plus --seeds 0 "${COMMON[@]}"

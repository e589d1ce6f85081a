#!/usr/bin/env bash
# Issue 27, point 8: why protocol 02's 9-epoch EffSSL arm, seed 0, read 33.18 in the reference
# and 33.14 in study_repro.sh's uninterrupted rerun. The reference was the one run stopped
# (PAUSE) and resumed: its first session trained epochs 0-6 (0-based), its second 7-8. This
# trains the same run from the same pinned commit into $OUT, stopped after $STOP epochs and
# resumed (one worker call with --stop-after, then the same call without), then compares it
# with the reference and with the uninterrupted rerun (benchmarks/compare_runs.py: the kNN at
# epochs 5 and 9, and where the per-epoch training losses part, with each session's epochs).
# With STOP=7 (the reference's) it should repeat the reference bit for bit; with another STOP,
# part from both at its own first resumed epoch. Run it from the reference's pinned worktree:
#   cd <pin2> && PIN_SITE=<pin2>_site STOP=7 REF=<repo>/benchmarks/results/equal_compute \
#       RERUN=<repo>/benchmarks/results/reproducibility \
#       OUT=<repo>/benchmarks/results/reproducibility/resume_check_ep7 OMP_NUM_THREADS=1 \
#       nohup setsid nice -n 19 bash <repo>/benchmarks/study_resume_check.sh \
#       >> <logs>/resume_check.log 2>&1 &
# Resumable: a finished run is skipped by the worker, a partial one continues.
set -u -o pipefail
: "${STOP:?set STOP to the epoch count of the first session}"
: "${REF:?set REF to protocol 02's study folder}"
: "${RERUN:?set RERUN to study_repro.sh's folder}"
: "${OUT:?set OUT to a new folder}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# shellcheck source=benchmarks/study_common.sh
. "$(dirname "$0")/study_common.sh"
use_pinned_code || exit 1
# the reference's worker call (its starts.log), less the machine's data folder (the default)
ARGS=(--worker --method effssl --variant lr=0.1,wu=0,ep=9 --seed 0 --fraction 0.1
      --model mobilenetv3_small_100 --batch 256 --epochs 9 --eval-epochs 5 9 --negatives -1
      --effssl-overrides --workers 2 --machine cpu --out "$OUT" --holdout 500 --split-seed 0
      --eval-set val --threads 1)
python benchmarks/study.py "${ARGS[@]}" --stop-after "$STOP" || exit 1
python benchmarks/study.py "${ARGS[@]}" || exit 1
# the comparisons' exit status says "differs", which is a finding here, not a failure
{
    echo "## Against the reference (protocol 02, stopped after 7 epochs and resumed)"
    python "$(dirname "$0")/compare_runs.py" "$REF" "$OUT" || true
    echo
    echo "## Against the uninterrupted rerun (study_repro.sh)"
    python "$(dirname "$0")/compare_runs.py" "$RERUN" "$OUT" || true
} | tee "$OUT/comparison.md"

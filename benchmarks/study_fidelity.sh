#!/usr/bin/env bash
# Issue 27, point 7: protocol 03's new runs (benchmarks/protocols/03_fidelity.md, committed
# before them), in the earlier study's regime: the official loop with this plugin's calibration
# and CutMix box (O+) for seeds 0, 1, 2 and 5, and this plugin's ema (P) for seed 5, the two
# seed-5 runs from the start (their checkpoints were lost at epoch 10: their partial records
# move to $OUT/superseded/, kept); then the report (benchmarks/fidelity_report.py) over both
# study folders. Resumable as every study runner. Needs the official code:
#   EFFSSL_OFFICIAL_SRC=<checkout of CupidJay/Efficient_SSL> (its one commit, 4aa2f0f)
#   cd <pin3> && PIN_SITE=<pin3>_site EFFSSL_OFFICIAL_SRC=<Efficient_SSL checkout> \
#       OUT=<repo>/benchmarks/results/study_seeds OMP_NUM_THREADS=1 \
#       nohup setsid nice -n 19 bash benchmarks/study_fidelity.sh >> <logs>/fidelity.log 2>&1 &
# Stop: touch "$OUT/PAUSE"; remove it and start the same command to continue.
set -u -o pipefail
OUT=${OUT:-benchmarks/results/study_seeds}
FIRST=${FIRST:-$(dirname "$OUT")/study}    # seeds 0-2 of O and P
: "${EFFSSL_OFFICIAL_SRC:?set EFFSSL_OFFICIAL_SRC to a checkout of CupidJay/Efficient_SSL}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
COMMON=(--batch 256 --epochs 50 --eval-epochs 5 10 20 30 40 50
        --effssl-overrides optimizer.lr=0.1 --threads 1 --out "$OUT")
# shellcheck source=benchmarks/study_common.sh
. "$(dirname "$0")/study_common.sh"
use_pinned_code || exit 1
for name in "official__calibration+box-plugin__s5" "effssl__bank_update-ema__s5"; do
    run=$OUT/runs/$name
    last=$( [ -f "$run/evals.csv" ] && tail -n 1 "$run/evals.csv" | cut -d, -f1 )
    if [ "$last" = 10 ] && [ ! -e "$run/official.pt" ] && [ ! -d "$run/ckpt" ]; then
        mkdir -p "$OUT/superseded"
        mv "$run" "$OUT/superseded/$name" && echo "moved the partial $name to $OUT/superseded/"
    fi
done
python benchmarks/study.py --plan official_like_plugin --seeds 0 1 2 5 "${COMMON[@]}" || exit 1
[ -e "$OUT/PAUSE" ] && { echo "PAUSE present: stopping"; exit 0; }
python benchmarks/study.py --plan ema --seeds 5 "${COMMON[@]}" || exit 1
python benchmarks/fidelity_report.py "$FIRST" "$OUT" --out "$(dirname "$OUT")/study_pooled/fidelity.md"

#!/usr/bin/env bash
# Issue 13's measurements, in one go on an otherwise idle machine: step cost of every method
# with mobilenetv3_small_100 and resnet18 at batch 256 and 64 (effssl with float32 and with
# bfloat16 bank products), the profiles, and the bank GEMM throughput. Writes into OUT.
set -eu
OUT=${OUT:-benchmarks/results}
SC=(python benchmarks/step_cost.py --out "$OUT")
"${SC[@]}" --model mobilenetv3_small_100 --batch 256 --backbone-target 1.3 --rounds 3 --steps 3 \
    --methods effssl effssl-bf16 simclr byol mocov2plus backbone --profile 2
"${SC[@]}" --model resnet18 --batch 256 --rounds 3 --steps 2 \
    --methods effssl effssl-bf16 simclr byol mocov2plus backbone --profile 1
"${SC[@]}" --model mobilenetv3_small_100 --batch 64 --backbone-target 1.3 --rounds 3 --steps 3 \
    --methods effssl effssl-bf16 simclr backbone --profile 2
"${SC[@]}" --model resnet18 --batch 64 --rounds 3 --steps 3 \
    --methods effssl effssl-bf16 simclr backbone
python benchmarks/bank_overhead.py --out "$OUT"

#!/usr/bin/env bash
# Issue 21's stability table at high resolution: the shipped texture configs (plain and framed,
# with their 32 px latent cells) at 128 px with seeds 0, 1 and 2, then at 256 px with seed 0, the
# configs' own 150 epochs each
# (benchmarks/stability.py; docs/results.md#training-stability). Hours on two cores; resumable:
# finished runs are read, a killed one resumes from its backup. Writes stability.md beside.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${WORKDIR:-results/stability_hi}
python -m benchmarks.stability --sizes=128 --seeds=0,1,2 --epochs=150 "--out=$out/128"
python -m benchmarks.stability --sizes=256 --seeds=0 --epochs=150 "--out=$out/256"

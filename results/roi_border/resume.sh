#!/usr/bin/env bash
# The region of interest where there is a frame: configs/textures_border.py (generated textures
# with dark frames of random width, up to 15 % of each side) as shipped, seed 0, scored without
# (score.roi=none) and with (auto) the automatic frame exclusion. Training is deterministic, so
# the two runs train the same model and differ only in the scoring.
# docs/results.md#bsdata-whole-against-tiled-region-of-interest-and-defect-size. Resumable.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${WORKDIR:-results/roi_border}
for roi in none auto; do
    python train_main.py --config=configs/textures_border.py --config.seed=0 \
        "--config.score.roi=$roi" "--workdir=$out/roi_$roi"
done

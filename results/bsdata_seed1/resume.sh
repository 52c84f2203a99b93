#!/usr/bin/env bash
# bsdata, seed 1 of MHP-WTA-2 with and without the evolving WTA (the variant's settings: two
# heads, no discriminator, eps = 0): is the schedule's pixel AUROC 0.838 / AUPRO 0.584 at seed 0
# (results/bsdata_ewta) against 0.746 / 0.342 (results/bsdata) the schedule or the seed?
# docs/results.md#the-evolving-wta. Resumable; needs ../shared/data/bsdata (or DATA=...).
set -euo pipefail
cd "$(dirname "$0")/../.."
data=${DATA:-../shared/data/bsdata}
out=${WORKDIR:-results/bsdata_seed1}
for schedule in 5 0; do
    python train_main.py --config=configs/mvtec.py "--config.data.root=$data" \
        --config.data.category=ball_screw --config.train.epochs=10 --config.seed=1 \
        --config.model.hypotheses=2 --config.loss.adv_weight=0 --config.loss.eps=0 \
        "--config.loss.evolving_wta_epochs=$schedule" "--workdir=$out/mhp-wta-2_ewta$schedule"
done

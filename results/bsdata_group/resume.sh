#!/usr/bin/env bash
# bsdata with the paper's hypotheses discrimination (loss.adv_hypotheses=group: D sees each
# tile's two hypotheses side by side as one group) for ConAD-2 with the evolving WTA (5 of 10
# epochs), paired with results/bsdata_ewta's ConAD-2 (the same config, schedule, epochs and seed,
# D seeing one random head per image). Does the grouping make ConAD's heads more diverse on real
# pitting? docs/results.md#the-evolving-wta. Resumable; needs ../shared/data/bsdata beside the
# repository (or DATA=...).
set -euo pipefail
cd "$(dirname "$0")/../.."
data=${DATA:-../shared/data/bsdata}
python train_main.py --config=configs/mvtec.py "--config.data.root=$data" \
    --config.data.category=ball_screw --config.train.epochs=10 --mode=ablation \
    --config.loss.evolving_wta_epochs=5 --config.loss.adv_hypotheses=group \
    --config.eval.variants=conad-2 --workdir=${WORKDIR:-results/bsdata_group}

#!/usr/bin/env bash
# bsdata with hypotheses discrimination against real groups of shifted views of one tile
# (loss.adv_hypotheses=views) for ConAD-2 with the evolving WTA (5 of 10 epochs), paired with
# results/bsdata_ewta (D sees one random head per image) and results/bsdata_group (real groups of
# two different tiles): the same config, schedule, epochs and seed 0; seed 1 pairs with
# results/bsdata_seed1's MHP-WTA-2 with the schedule. Do real groups of one input's
# plausible variation make ConAD's heads diverse without the grid that "group" draws?
# docs/results.md#hypotheses-discrimination-against-views-of-one-image. Resumable; needs
# ../shared/data/bsdata beside the repository (or DATA=...).
set -euo pipefail
cd "$(dirname "$0")/../.."
data=${DATA:-../shared/data/bsdata}
python train_main.py --config=configs/mvtec.py "--config.data.root=$data" \
    --config.data.category=ball_screw --config.train.epochs=10 --mode=ablation \
    --config.loss.evolving_wta_epochs=5 --config.loss.adv_hypotheses=views \
    --config.eval.variants=conad-2 --seeds=2 --workdir=${WORKDIR:-results/bsdata_views}

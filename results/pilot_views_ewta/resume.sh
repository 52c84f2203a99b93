#!/usr/bin/env bash
# Hypotheses discrimination against views of one image (loss.adv_hypotheses=views) together with
# the evolving WTA (loss.evolving_wta_epochs=10 of 20) for the CIFAR-10 dev table's ConAD-8 on
# the ten classes, seed 0: the combination that made ConAD-2's heads diverse on bsdata, paired
# with results/pilot_ewta (ConAD-8 and MHP-WTA-8 with the same schedule, data, epochs and seed).
# docs/results.md#hypotheses-discrimination-against-views-of-one-image. Resumable; needs
# ../shared/data/cifar10-dev beside the repository (or DATA=...).
set -euo pipefail
cd "$(dirname "$0")/../.."
data=${DATA:-../shared/data/cifar10-dev}
python train_main.py --config=configs/cifar10_folders.py "--config.data.root=$data" \
    --config.train.epochs=20 --config.loss.evolving_wta_epochs=10 --mode=ablation --seeds=1 \
    --config.eval.variants=conad-8 --config.loss.adv_hypotheses=views \
    --config.eval.classes=${CLASSES:-airplane,automobile,bird,cat,deer,dog,frog,horse,ship,truck} \
    --workdir=${WORKDIR:-results/pilot_views_ewta}

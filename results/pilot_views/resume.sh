#!/usr/bin/env bash
# Hypotheses discrimination against real groups of shifted views of one image
# (loss.adv_hypotheses=views) for the CIFAR-10 dev table's ConAD-8 (hard WTA, 20 epochs, seed 0),
# on airplane, bird and deer, paired with results/cifar10_dev's ConAD-8 and MHP-WTA-8 (same
# config, data, epochs and seed). docs/results.md#hypotheses-discrimination-against-views-of-one-image.
# Resumable; needs ../shared/data/cifar10-dev beside the repository (or DATA=...).
set -euo pipefail
cd "$(dirname "$0")/../.."
data=${DATA:-../shared/data/cifar10-dev}
python train_main.py --config=configs/cifar10_folders.py "--config.data.root=$data" \
    --config.train.epochs=20 --mode=ablation --seeds=1 --config.eval.variants=conad-8 \
    --config.loss.adv_hypotheses=views \
    --config.eval.classes=${CLASSES:-airplane,bird,deer} \
    --workdir=${WORKDIR:-results/pilot_views}

#!/usr/bin/env bash
# Pilot: the evolving WTA (loss.evolving_wta_epochs=10 of 20: the best k of 8 heads share the
# NLL, k = 8, 4, 2 and then 1 from epoch 11) for ConAD-8 and MHP-WTA-8 on the ten classes of the
# CIFAR-10 dev table, paired (same seed, data, epochs and settings but the schedule) with the
# table's runs in results/cifar10_dev. Do the never-winning heads of the hard-WTA ConAD-8 stay
# images, and are ConAD's heads in use then more diverse than MHP-WTA's?
# docs/results.md#the-evolving-wta. Resumable.
set -euo pipefail
cd "$(dirname "$0")/../.."
data=${DATA:-../shared/data/cifar10-dev}
python train_main.py --config=configs/cifar10_folders.py "--config.data.root=$data" \
    --config.train.epochs=20 --config.loss.evolving_wta_epochs=10 --mode=ablation \
    --config.eval.classes=${CLASSES:-airplane,automobile,bird,cat,deer,dog,frog,horse,ship,truck} --config.eval.variants=conad-8,mhp-wta-8 \
    --workdir=${WORKDIR:-results/pilot_ewta}

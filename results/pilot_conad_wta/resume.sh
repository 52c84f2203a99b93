#!/usr/bin/env bash
# Pilot: ConAD-8 with the hard winner-takes-all of MHP-WTA-8 (loss.eps=0 instead of the
# default 0.05) on the first classes of the CIFAR-10 dev table, paired (same seed, data and
# epochs) with the table's ConAD-8 (eps 0.05) and MHP-WTA-8 (eps 0, no D), so that D's effect on
# the heads is read at equal eps: docs/results.md#d-at-equal-relaxation.
set -euo pipefail
cd "$(dirname "$0")/../.."
data=${DATA:-../shared/data/cifar10-dev}
python train_main.py --config=configs/cifar10_folders.py "--config.data.root=$data" \
    --config.train.epochs=20 --mode=ablation --seeds=1 --config.eval.variants=conad-8 \
    --config.loss.eps=0 --config.eval.classes=${CLASSES:-airplane,automobile,bird,cat,deer} \
    --workdir=${WORKDIR:-results/pilot_conad_wta}

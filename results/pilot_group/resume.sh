#!/usr/bin/env bash
# Pilot: ConAD-2 with the paper's hypotheses discrimination (loss.adv_hypotheses=group) on the
# first classes of the CIFAR-10 dev table, paired (same seed, data and epochs) with the table's
# ConAD-2 (sample): docs/results.md#hypotheses-discrimination-at-20-epochs.
# Made with the relaxed ConAD-2 (loss.eps=0.05), before ConAD-H became the paper's hard WTA
# (commit 3183a3e). On later code this command trains the hard-WTA ConAD-2 in new runs: it never
# reuses these records. To reproduce them, check out 59b599f.
set -euo pipefail
cd "$(dirname "$0")/../.."
data=${DATA:-../shared/data/cifar10-dev}
python train_main.py --config=configs/cifar10_folders.py "--config.data.root=$data" \
    --config.train.epochs=20 --mode=ablation --seeds=1 --config.eval.variants=conad-2 \
    --config.loss.adv_hypotheses=group --config.eval.classes=${CLASSES:-airplane,automobile,bird,cat,deer} \
    --workdir=results/pilot_group

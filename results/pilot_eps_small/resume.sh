#!/usr/bin/env bash
# Pilot: ConAD-8 with a tiny relaxation (loss.eps=0.005 instead of the paper's 0) on the first
# classes of the CIFAR-10 dev table, paired (same seed, data, epochs and settings but eps) with
# the table's ConAD-8 (eps 0) and ConAD-8 eps 0.05 (results/relaxed_conad): does a small NLL
# share keep the never-winning heads from turning into checkerboards without pulling the heads
# together? docs/results.md#d-at-equal-relaxation. Plain runs (the conad-H variant fixes eps=0).
set -euo pipefail
cd "$(dirname "$0")/../.."
data=${DATA:-../shared/data/cifar10-dev}
for c in ${CLASSES:-airplane bird cat}; do
  python train_main.py --config=configs/cifar10_folders.py "--config.data.root=$data" \
      --config.train.epochs=20 --config.model.hypotheses=8 --config.loss.eps=0.005 \
      --config.data.normal_class=$c --config.eval.variants=conad-8 --config.eval.classes=$c \
      --workdir=${WORKDIR:-results/pilot_eps_small}/class_$c/seed_0
done

#!/usr/bin/env bash
# Resumes the CIFAR-10 dev table (docs/results.md#cifar-10-with-the-adaptive-balance): seed 0 of
# every variant the paper's table names, then seed 1 of the three the table reports with two seeds.
# Finished runs (metrics.json with the same config) are reused; a killed run resumes from its last
# epoch where its checkpoint is still on this machine, else it starts again.
# Run from the repository root: bash results/cifar10_dev/resume.sh
set -euo pipefail
common=(--config=configs/cifar10_folders.py --config.data.root=../shared/data/cifar10-dev
        --config.train.epochs=20 --mode=ablation --workdir=results/cifar10_dev)
python train_main.py "${common[@]}" --seeds=1 \
    --config.eval.variants=vae,mhp-wta-8,conad-8,vae-gan,mhp-8,conad-2,mdn-8
python train_main.py "${common[@]}" --seeds=2 --config.eval.variants=vae,mhp-wta-8,conad-8

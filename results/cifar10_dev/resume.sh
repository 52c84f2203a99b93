#!/usr/bin/env bash
# Resumes the CIFAR-10 dev table (docs/results.md#cifar-10-with-the-adaptive-balance): seed 0 of
# every variant of the paper's table, then seed 1 of the three the table reports with two seeds.
# Finished runs (a metrics.json with the same config, kept in git) are reused; a killed run
# resumes from its last epoch where its backup is still on this machine, else it starts again.
# ConAD-H is the paper's hard WTA (loss.eps=0) since commit 3183a3e; the relaxed ConAD runs
# made before it are in results/relaxed_conad/ and are never reused here.
# Needs the development data in ../shared/data/cifar10-dev beside the repository (or DATA=...).
set -euo pipefail
cd "$(dirname "$0")/../.."
data=${DATA:-../shared/data/cifar10-dev}
common=(--config=configs/cifar10_folders.py "--config.data.root=$data"
        --config.train.epochs=20 --mode=ablation --workdir=results/cifar10_dev)
python train_main.py "${common[@]}" --seeds=1 \
    --config.eval.variants=vae,mhp-wta-8,conad-8,vae-gan,mhp-8,conad-2,mdn-8
python train_main.py "${common[@]}" --seeds=2 --config.eval.variants=vae,mhp-wta-8,conad-8

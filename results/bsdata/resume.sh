#!/usr/bin/env bash
# bsdata (real pitting on ball-screw photographs), configs/mvtec.py as shipped but 10 epochs: the
# paper's MHP-WTA-2, ConAD-2 (hard WTA) and the VAE, each scored with its best validation epoch
# (docs/results.md#bsdata-real-pitting-on-a-ball-screw-the-papers-variants). Resumable; needs
# ../shared/data/bsdata beside the repository (or DATA=...).
set -euo pipefail
cd "$(dirname "$0")/../.."
data=${DATA:-../shared/data/bsdata}
python train_main.py --config=configs/mvtec.py "--config.data.root=$data" \
    --config.data.category=ball_screw --config.train.epochs=10 --mode=ablation \
    --config.eval.variants=mhp-wta-2,conad-2,vae --workdir=${WORKDIR:-results/bsdata}

#!/usr/bin/env bash
# bsdata with the evolving WTA (loss.evolving_wta_epochs=5 of 10: both heads share the NLL for
# five epochs, then the WTA), ConAD-2 and MHP-WTA-2, paired with results/bsdata (the same config,
# epochs and seed without the schedule). docs/results.md#the-evolving-wta. Resumable; needs
# ../shared/data/bsdata beside the repository (or DATA=...).
set -euo pipefail
cd "$(dirname "$0")/../.."
data=${DATA:-../shared/data/bsdata}
python train_main.py --config=configs/mvtec.py "--config.data.root=$data" \
    --config.data.category=ball_screw --config.train.epochs=10 --mode=ablation \
    --config.loss.evolving_wta_epochs=5 --config.eval.variants=conad-2,mhp-wta-2 \
    --workdir=${WORKDIR:-results/bsdata_ewta}

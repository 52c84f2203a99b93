#!/usr/bin/env bash
# bsdata, issue 21's inspection comparisons with configs/mvtec.py at 10 epochs (as results/bsdata):
#   tiled/      the shipped config (64 px native tiles) is results/bsdata itself; not repeated here
#   whole64/    the whole image letterboxed into 64 px (data.crop=none), the config's image_size
#   whole256/   the whole image letterboxed into 256 px: as many pixels per epoch as the 16 tiles
#   roi_auto/   the shipped tiled VAE again, with score.roi=auto (each image's uniform frame out)
# (docs/results.md#bsdata-whole-against-tiled-region-of-interest-and-defect-size). Resumable;
# needs ../shared/data/bsdata beside the repository (or DATA=...).
set -euo pipefail
cd "$(dirname "$0")/../.."
data=${DATA:-../shared/data/bsdata}
out=${WORKDIR:-results/bsdata_inspection}
run() {
    local dir=$1 variants=$2
    shift 2
    python train_main.py --config=configs/mvtec.py "--config.data.root=$data" \
        --config.data.category=ball_screw --config.train.epochs=10 --mode=ablation \
        "--config.eval.variants=$variants" "--workdir=$out/$dir" "$@"
}
run whole64 vae,conad-2 --config.data.crop=none
run roi_auto vae --config.score.roi=auto
run whole256 vae --config.data.crop=none --config.data.image_size=256

#!/usr/bin/env bash
# Issue 21's item 5: the textures demo (configs/textures.py, 150 epochs) at 32, 64 and 128 px
# with one latent cell per 32 px (model.latent_cell_px=32, the config's) against one dense latent
# for the whole patch (latent_cell_px=0, every earlier release), seeds 0-2 at 64 px, 0 at 128
# px (seeds 1-2 of the cells at 128 px are results/stability_hi's runs of the same config, not
# trained again here); then bsdata's VAE with 32 px cells (configs/mvtec.py, 64 px
# tiles, 10 epochs), paired with results/bsdata_inspection/roi_auto. docs/results.md#the-latent-grid.
# Resumable: finished runs are skipped, a killed one resumes from its backup. bsdata needs
# ../shared/data/bsdata (or DATA=). The seed-0 runs ran before the key's rename: their
# config.json says model.latent_grid, 0 for 32 px cells and 1 for the dense latent.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${WORKDIR:-results/latent_grid}
data=${DATA:-../shared/data/bsdata}
textures() {
    local dir=$1 size=$2 cell=$3 seed=$4
    [ -f "$out/$dir/metrics.json" ] && return 0
    python train_main.py --config=configs/textures.py "--config.seed=$seed" "--workdir=$out/$dir" \
        "--config.data.image_size=$size" "--config.data.patch_size=$((size > 64 ? size : 64))" \
        "--config.model.latent_cell_px=$cell"
}
textures textures-32px-seed0 32 32 0
for seed in 0 1 2; do
    textures "textures-64px-cell32-seed$seed" 64 32 "$seed"
    textures "textures-64px-dense-seed$seed" 64 0 "$seed"
done
textures textures-128px-cell32-seed0 128 32 0
textures textures-128px-dense-seed0 128 0 0
[ -f "$out/bsdata_cell32/ablation.md" ] ||
    python train_main.py --config=configs/mvtec.py "--config.data.root=$data" \
        --config.data.category=ball_screw --config.train.epochs=10 --mode=ablation \
        --config.eval.variants=vae --config.score.roi=auto --config.model.latent_cell_px=32 \
        "--workdir=$out/bsdata_cell32"

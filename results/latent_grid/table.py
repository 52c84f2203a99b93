"""Prints docs/results.md#the-latent-grid's table from this folder's finished runs (metrics.json
and history.csv of each), so the figures in the doc can be checked against the records."""

import csv
import json
import pathlib

HERE = pathlib.Path(__file__).parent
COLUMNS = ("image_auroc", "pixel_auroc", "aupro")


def row(run: pathlib.Path) -> str:
    metrics = json.loads((run / "metrics.json").read_text())
    config = metrics["config"]
    history = list(csv.DictReader((run / "history.csv").open()))
    seconds = sum(float(r["epoch_seconds"]) for r in history)
    kept = metrics["weights"].get("epoch", "?")
    figures = " | ".join(f"{metrics[c]:.3f}" for c in COLUMNS)
    model = config["model"]
    # Runs made before the key's rename say latent_grid: 0 (32 px cells) or 1 (dense).
    cell = model.get("latent_cell_px", 32 if model.get("latent_grid") == 0 else 0)
    return (
        f"| {config['data']['image_size']} | {cell or 'dense'} | {config['seed']} "
        f"| {figures} | {metrics['mechanism'].get('head_diversity', float('nan')):.2f} "
        f"| {kept} | {seconds:.0f} s |"
    )


if __name__ == "__main__":
    print(
        "| px | latent_cell_px | seed | image AUROC | pixel AUROC | AUPRO | head_diversity"
        " | kept epoch | training |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    runs = [run for run in HERE.glob("textures-*") if (run / "metrics.json").exists()]
    # By size, then the cells before the dense latent, then seed (textures-<px>px-<latent>-seed<n>).
    for run in sorted(
        runs, key=lambda r: (int(r.name.split("-")[1][:-2]), "dense" in r.name, r.name)
    ):
        print(row(run))

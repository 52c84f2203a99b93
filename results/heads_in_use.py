"""Which heads of a trained run are in use, and how they differ: the figures behind
docs/results.md#d-at-equal-relaxation.

`head_diversity` (the training diagnostic) averages over every pair of heads, so a head that
never wins and drifts anywhere (a checkerboard, a dark blob) raises it as much as two useful,
different heads. This reads a finished run's `model.keras`, scores its normal class's test
images (`<data.root>/test/<class>/`, as configs/cifar10_folders.py lays them out) with
`ConAD.analyze` (for a run on an MVTec-layout set, `data.name=mvtec`: a seeded random `--limit`
of the good test images' non-overlapping `image_size` tiles at native resolution, as the run
trained on them), and reports per run: every head's share of wins, the diversity over all heads
and over the heads *in use* (winning at least `--min_share` of the images), and the sharpness of
the best guess and of the heads in use (high-frequency energy over the inputs').

    python results/heads_in_use.py results/cifar10_dev/conad-8/class_airplane/seed_0 ...
    python results/heads_in_use.py results/bsdata_ewta/conad-2/class_ball_screw/seed_0 \
        results/bsdata_group/conad-2/class_ball_screw/seed_0 --figure heads.png

`--figure` draws every run's heads on the same first `--rows` images (or tiles).
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def images_of(run: str, limit: int) -> np.ndarray:
    from PIL import Image

    with open(os.path.join(run, "config.json")) as f:
        data = json.load(f)["data"]
    root, normal = data["root"], data["normal_class"]
    if not os.path.isabs(root):  # stored relative to the repository the study ran from
        root = os.path.join(os.path.dirname(__file__), "..", root)
    if data["name"] == "mvtec":
        root = os.path.join(root, data["category"])
    from mhp_keras.data.image_files import list_image_files

    folder = os.path.join(root, "test", normal)
    files = list_image_files(folder) if os.path.isdir(folder) else []
    if not files:
        raise SystemExit(f"{run}: no test images of class {normal!r} under {root}/test/")
    mode = "RGB" if data["channels"] == 3 else "L"

    def read(path):
        image = np.asarray(Image.open(path).convert(mode), np.float32) / 255
        return image if image.ndim == 3 else image[..., None]

    if data["name"] != "mvtec":
        return np.stack([read(f) for f in files[:limit]])
    # Large photographs: every non-overlapping tile the size the model reads, then a seeded
    # sample, so the heads are compared on the native-resolution tiles they were trained on.
    size = data["image_size"]
    tiles = [
        image[y : y + size, x : x + size]
        for image in map(read, files)
        for y in range(0, image.shape[0] - size + 1, size)
        for x in range(0, image.shape[1] - size + 1, size)
    ]
    pick = np.random.default_rng(0).permutation(len(tiles))[:limit]
    return np.stack([tiles[i] for i in sorted(pick)])


def analyzed(model, run: str, limit: int):
    """The run's images (or tiles) and its loaded `model`'s `ConAD.analyze` outputs on them, as
    numpy."""
    images = images_of(run, limit)
    parts = [model.analyze(images[i : i + 250]) for i in range(0, len(images), 250)]
    return images, {key: np.concatenate([np.asarray(p[key]) for p in parts]) for key in parts[0]}


def describe(model, run: str, limit: int, min_share: float) -> dict:
    # The training diagnostics' own measures (mhp_keras.training.diagnostics), on other images
    # and on a subset of the heads.
    from mhp_keras.training import diagnostics as dg

    images, out = analyzed(model, run, limit)
    heads, best = out["hypotheses"], out["best_hypothesis"]  # [B, K, h, w, C], [B, h, w, C]
    k = heads.shape[1]
    shares = np.bincount(np.asarray(out["winner_index"]), minlength=k) / len(images)
    in_use = [i for i in range(k) if shares[i] >= min_share]

    def diversity(ids):
        subset = np.asarray(heads)[:, list(ids)]
        return float(np.mean(dg.per_image_head_diversity(images, subset, best)))

    return {
        "run": run,
        "win_shares": [round(float(s), 3) for s in shares],
        "heads_in_use": len(in_use),
        "diversity_all": diversity(range(k)),
        "diversity_in_use": diversity(in_use),
        "sharpness_best": float(dg.sharpness(images, best)),
        "sharpness_per_head": [round(float(v), 3) for v in dg.head_sharpness(images, heads)],
    }


def figure(runs: list[str], models: list, path: str, rows: int) -> None:
    """Every head of every run on the same first `rows` images (runs of one data set): one row
    per image, the input and then each run's heads, the winning head's title starred."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [analyzed(m, run, rows) for m, run in zip(models, runs, strict=True)]
    columns = 1 + sum(out["hypotheses"].shape[1] for _, out in results)
    fig, axes = plt.subplots(rows, columns, figsize=(1.3 * columns, 1.4 * rows), squeeze=False)
    images = results[0][0]
    names = []
    for run in runs:
        parts = os.path.normpath(run).split(os.sep)
        # An ablation's run (<study>/<variant>/class_<c>/seed_<s>): its study and variant.
        names.append("/".join(parts[-4:-2]) if parts[-1].startswith("seed_") else parts[-1])
    for r in range(rows):
        cells = [("input", images[r])]
        for name, (_, out) in zip(names, results, strict=True):
            for k, head in enumerate(out["hypotheses"][r]):
                star = "*" if k == int(out["winner_index"][r]) else ""
                cells.append((f"{name}\nhead {k}{star}", head))
        for ax, (title, picture) in zip(axes[r], cells, strict=True):
            ax.imshow(np.clip(picture.squeeze(), 0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=6)
    fig.suptitle("heads per run (* = the winner)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="finished run folders (with model.keras)")
    parser.add_argument(
        "--limit", type=int, default=500, help="test images (or tiles) of the normal class"
    )
    parser.add_argument("--min_share", type=float, default=0.02, help="a head in use wins this")
    parser.add_argument("--figure", help="also draw every run's heads on the same images here")
    parser.add_argument("--rows", type=int, default=6, help="images in the figure")
    args = parser.parse_args()
    import mhp_keras

    # Each run's model is loaded once, for the figure and its description alike.
    models = [mhp_keras.load_model(os.path.join(run, "model.keras")) for run in args.runs]
    if args.figure:
        figure(args.runs, models, args.figure, args.rows)
    for model, run in zip(models, args.runs, strict=True):
        print(json.dumps(describe(model, run, args.limit, args.min_share)))


if __name__ == "__main__":
    main()

"""What an epoch of tiled training costs: random tiles per image (`data.tiles_per_image`) make it
independent of the images' size.

Generates grey noise-surface PNGs in a temporary folder (no shared data) and times training
epochs through the real pipeline (`make_dataset`, PNGs decoded and cached on the first epoch,
`experiment.repeated`'s one repeated iterator) and `fit`, in three cases with the same tile size:

- `large_sampled`: `images` large photos (1130 x 460 by default), `tiles_per_image` random tiles
  of each per epoch;
- `small`: `images` x `tiles_per_image` small images of the tile's size, one example each: the
  same number of examples per epoch;
- `large_every_tile` (optional, `--every_tile`): the large photos with every tile per epoch
  (`tiles_per_image=0`), which is what the cost used to grow with.

The first epoch (decoding, caching, tracing) is reported apart from the median of the later ones.

    python -m benchmarks.epoch_cost [--epochs=4] [--images=16] [--tiles_per_image=16] [--every_tile]
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import keras
import numpy as np

TILE = 64
BATCH = 32


def write_surfaces(folder: str, count: int, height: int, width: int, seed: int) -> list[str]:
    """`count` grey noise PNGs of height x width; their paths."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(count):
        pixels = np.clip(128 + 12 * rng.standard_normal((height, width)), 0, 255).astype(np.uint8)
        paths.append(os.path.join(folder, f"{i:05d}.png"))
        Image.fromarray(pixels).save(paths[-1])
    return paths


class EpochClock(keras.callbacks.Callback):
    """Wall time of each epoch (its training steps: the fits here have no validation), and the
    `examples_per_sec` that `Throughput` logged for it."""

    def __init__(self):
        super().__init__()
        self.seconds, self.examples_per_sec, self.start = [], [], 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)
        self.examples_per_sec.append(float((logs or {}).get("examples_per_sec", 0.0)))


def time_case(paths, tile: int, tiles_per_image: int, crop: str, epochs: int, hypotheses: int):
    """Trains a fresh model `epochs` epochs on `paths`; epoch times and examples per epoch."""
    from benchmarks.steps import build_model, model_config
    from mhp_keras.data.base import ImageSet
    from mhp_keras.data.pipeline import make_dataset
    from mhp_keras.training.callbacks import Throughput
    from mhp_keras.training.experiment import repeated

    keras.utils.set_random_seed(0)
    images = ImageSet(
        labels=np.zeros(len(paths)), ids=list(map(str, range(len(paths)))), paths=paths
    )
    ds = make_dataset(
        images,
        channels=1,
        image_size=tile,
        batch_size=BATCH,
        training=True,
        crop=crop,
        tiles_per_image=tiles_per_image,
    )
    examples = sum(int(b.shape[0]) for b in ds)  # an untimed pass that counts the examples
    ds, steps = repeated(ds)
    model = build_model(model_config(hypotheses, tile, 1))
    clock = EpochClock()
    known = examples if steps else None
    model.fit(
        ds,
        epochs=epochs,
        steps_per_epoch=steps,
        verbose=0,
        callbacks=[Throughput(BATCH, known), clock],
    )
    later = clock.seconds[1:] or clock.seconds
    return {
        "images": len(paths),
        "examples_per_epoch": examples,
        "steps_per_epoch": steps or -(-examples // BATCH),
        "first_epoch_s": round(clock.seconds[0], 3),
        "epoch_s": round(float(np.median(later)), 3),
        "examples_per_sec": round(float(np.median(clock.examples_per_sec[1:] or [0.0])), 1),
    }


def measure(
    epochs: int = 4,
    images: int = 16,
    tiles_per_image: int = 16,
    height: int = 460,
    width: int = 1130,
    tile: int = TILE,
    hypotheses: int = 4,
    every_tile: bool = False,
) -> dict:
    """The cases above, in a temporary folder removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="epoch_cost_") as folder:
        large = write_surfaces(os.path.join(folder, "large"), images, height, width, seed=0)
        small = write_surfaces(
            os.path.join(folder, "small"), images * tiles_per_image, tile, tile, 1
        )
        result = {
            "settings": {
                "epochs": epochs,
                "tile": tile,
                "batch": BATCH,
                "hypotheses": hypotheses,
                "large_image": [height, width],
                "tiles_per_image": tiles_per_image,
            },
            "large_sampled": time_case(large, tile, tiles_per_image, "tile", epochs, hypotheses),
            "small": time_case(small, tile, 0, "none", epochs, hypotheses),
        }
        if every_tile:
            result["large_every_tile"] = time_case(large, tile, 0, "tile", epochs, hypotheses)
    result["sampled_over_small"] = round(
        result["large_sampled"]["epoch_s"] / result["small"]["epoch_s"], 3
    )
    return result


def main() -> None:
    from absl import app, flags

    flags.DEFINE_integer("epochs", 4, "Epochs per case (the first is reported apart).")
    flags.DEFINE_integer("images", 16, "Large images (the small case has images x tiles).")
    flags.DEFINE_integer("tiles_per_image", 16, "Random tiles per large image and epoch.")
    flags.DEFINE_bool("every_tile", False, "Also time every tile of the large images.")

    def run(argv):
        del argv
        f = flags.FLAGS
        out = measure(f.epochs, f.images, f.tiles_per_image, every_tile=f.every_tile)
        print(json.dumps(out, indent=2))

    app.run(run)


if __name__ == "__main__":
    main()

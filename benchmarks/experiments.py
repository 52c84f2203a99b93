"""Wall time of the experiments users actually run, on generated data of the same shapes.

    python -m benchmarks.experiments [--quick] [--epochs=N] [--output_dir=runs/experiments]

Why it exists: the speed benchmark (`benchmarks.speed`) times single steps, but what a user waits
for is a whole run, and issue 19 showed the two can disagree: `train.jit_compile=auto` never
tried XLA on the runs that matter. This times, through the real training entry
(`mhp_keras.training.experiment.run`, `train.jit_compile=auto`), and reports the auto choice of:

- a CIFAR-10-like one-class run (configs/cifar10_folders.py: 2,000 32x32 RGB training images of
  the normal class, 500 test images for each of 10 classes) for each variant of the ablation
  (VAE, MHP-WTA-8, ConAD-8), for `--epochs` epochs (full: 20, as the README's table; quick: 2);
- one epoch of 64 px grey inspection training (configs/mvtec.py with `data.channels=1`: 700
  "good" training images, 100 good and 100 defective test images).

The images are random PNGs written to a temporary folder: a step's cost depends on the shapes,
not on the pixels, so anyone can run it (no download). Writes `experiments.json` and
`experiments.md` into --output_dir and prints the table. `--smoke` is for the test only: a
handful of tiny images, one epoch, a tiny model; its numbers mean nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from PIL import Image  # noqa: E402

from mhp_keras.io_utils import write_json_atomic, write_text_atomic  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Mode:
    """One mode's sizes. `tiny`: the test's tiny model and batch instead of the configs'."""

    epochs: int
    cifar_train: int
    cifar_test_per_class: int
    cifar_classes: int
    grey_train: int
    grey_test: int
    variants: tuple[str, ...] = ("vae", "mhp-wta-8", "conad-8")
    tiny: bool = False


MODES = {
    "full": Mode(20, 2000, 500, 10, 700, 100),
    "quick": Mode(2, 2000, 500, 10, 700, 100),
    "smoke": Mode(1, 12, 2, 2, 12, 2, variants=("vae", "conad-2"), tiny=True),
}
TINY = {  # the smoke mode's model, as the tests' tiny config
    "data.image_size": 16,
    "data.batch_size": 4,
    "model.latent_dim": 4,
    "model.base_filters": 8,
    "model.disc_base_filters": 8,
    "train.verbose": 0,
    "eval.report": False,
}


def write_images(folder: str, count: int, side: int, channels: int, rng) -> None:
    """`count` random `side` x `side` PNGs; only their shape matters for the timings."""
    os.makedirs(folder, exist_ok=True)
    shape = (side, side) if channels == 1 else (side, side, channels)
    for i in range(count):
        pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, f"{i:05d}.png"))


def class_folders(root: str, train: dict, test: dict, side: int, channels: int) -> str:
    """`<root>/train/<class>/*.png` and `<root>/test/<class>/*.png`, as data.name=folders reads."""
    rng = np.random.default_rng(0)
    for split, counts in (("train", train), ("test", test)):
        for name, count in counts.items():
            write_images(os.path.join(root, split, name), count, side, channels, rng)
    return root


def _override(config, values: dict):
    for key, value in values.items():
        section, name = key.split(".")
        config[section][name] = value
    return config


def cifar_config(mode: Mode, root: str, variant: str, epochs: int):
    """configs/cifar10_folders.py for one variant, class c0 normal, on the generated folders."""
    from configs import cifar10_folders
    from mhp_keras.studies.ablation import parse_variant

    config = parse_variant(variant).apply(cifar10_folders.get_config())
    values = {"data.root": root, "data.normal_class": "c0", "train.epochs": epochs}
    values["train.jit_compile"] = "auto"
    return _override(config, {**values, **(TINY if mode.tiny else {})})


def grey_config(mode: Mode, root: str):
    """configs/mvtec.py's model and sizes, grey (data.channels=1), one epoch, from folders."""
    from configs import mvtec

    values = {"data.name": "folders", "data.root": root, "data.channels": 1, "train.epochs": 1}
    values["train.jit_compile"] = "auto"
    return _override(mvtec.get_config(), {**values, **(TINY if mode.tiny else {})})


def time_run(config, workdir: str) -> dict:
    """One train-and-evaluate run through the real entry: wall and training seconds, the steps,
    the AUROC (meaningless on random images: a check that it ran) and the auto XLA choice."""
    import keras

    from mhp_keras.training.experiment import run

    keras.backend.clear_session()
    start = time.perf_counter()
    metrics = run(config, workdir)
    wall = time.perf_counter() - start
    jit = metrics.get("jit_compile", {})
    keep = ("source", "chosen", "reason", "predicted_train_s", "xla_compile_estimate_s")
    return {
        "wall_s": wall,
        "train_s": metrics.get("timings", {}).get("train_seconds"),
        "epochs": int(config.train.epochs),
        "image_size": int(config.data.image_size),
        "channels": int(config.data.channels),
        "batch": int(config.data.batch_size),
        "hypotheses": int(config.model.hypotheses),
        "image_auroc": metrics.get("image_auroc"),
        "jit_compile": {k: jit.get(k) for k in keep if k in jit}
        | {k: jit.get(k) for k in ("default_step_ms", "xla_step_ms") if jit.get(k) is not None},
    }


def run_experiments(mode_name: str, output_dir: str, epochs: int | None = None) -> dict:
    """Every experiment of the mode in order; writes and returns the results."""
    from benchmarks.harness import machine_info

    mode = MODES[mode_name]
    epochs = epochs or mode.epochs
    side = TINY["data.image_size"] if mode.tiny else None
    results = {"mode": mode_name, "machine": machine_info(), "experiments": {}}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mhp_experiments_") as tmp:
        classes = [f"c{i}" for i in range(mode.cifar_classes)]
        cifar = class_folders(
            os.path.join(tmp, "cifar"),
            {"c0": mode.cifar_train},
            {c: mode.cifar_test_per_class for c in classes},
            side or 32,
            3,
        )
        for variant in mode.variants:
            config = cifar_config(mode, cifar, variant, epochs)
            name = f"cifar_one_class/{variant}"
            results["experiments"][name] = time_run(config, os.path.join(tmp, "runs", variant))
        grey = class_folders(
            os.path.join(tmp, "grey"),
            {"good": mode.grey_train},
            {"good": mode.grey_test, "defect": mode.grey_test},
            side or 64,
            1,
        )
        run_dir = os.path.join(tmp, "runs", "grey")
        results["experiments"]["grey_64px_one_epoch"] = time_run(grey_config(mode, grey), run_dir)
    results["elapsed_s"] = time.perf_counter() - start
    os.makedirs(output_dir, exist_ok=True)
    write_json_atomic(os.path.join(output_dir, "experiments.json"), results)
    write_text_atomic(os.path.join(output_dir, "experiments.md"), to_markdown(results))
    return results


def _choice(jit: dict) -> str:
    if not jit:
        return "-"
    chosen = "XLA" if jit.get("chosen") else "default"
    return f"{chosen} ({jit.get('source')}: {jit.get('reason', '')})"


def to_markdown(results: dict) -> str:
    """One table row an experiment."""
    lines = [
        f"Experiments ({results['mode']} mode) on {results['machine']['cpu_model']}, "
        f"{results['elapsed_s']:.0f} s in all.",
        "",
        "| experiment | shape | epochs | wall | training | train.jit_compile=auto |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results["experiments"].items():
        shape = f"{r['image_size']}x{r['image_size']}x{r['channels']}, H={r['hypotheses']}"
        train = "-" if r["train_s"] is None else f"{r['train_s']:.1f} s"
        lines.append(
            f"| {name} | {shape}, batch {r['batch']} | {r['epochs']} | {r['wall_s']:.1f} s "
            f"| {train} | {_choice(r['jit_compile'])} |"
        )
    return "\n".join(lines) + "\n"


def define_flags() -> None:
    """Defined only when run as a script, so that importing this module in pytest next to other
    absl flags does not clash."""
    flags.DEFINE_bool("quick", False, "2 epochs of the one-class runs instead of 20.")
    flags.DEFINE_bool("smoke", False, "Test only: a handful of tiny images, one epoch.")
    flags.DEFINE_integer("epochs", 0, "Epochs of the one-class runs (0: the mode's).")
    flags.DEFINE_string(
        "output_dir",
        os.path.join("runs", "experiments"),
        "Where experiments.json and .md are written.",
    )


def main(argv):
    del argv
    values = flags.FLAGS
    mode = "smoke" if values.smoke else "quick" if values.quick else "full"
    results = run_experiments(mode, values.output_dir, values.epochs or None)
    print(json.dumps(results, indent=2, sort_keys=True, default=str))
    print(to_markdown(results))


if __name__ == "__main__":
    define_flags()
    app.run(main)

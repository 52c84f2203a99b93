"""The benchmark's measurements of what surrounds a training step: the input pipeline and inference.

The pipeline is compared with in-memory data over whole epochs after the cache-filling first one,
each read from one repeated iterator as training reads it; deleting a one-pass iterator (which fit
would pay per epoch without that) is timed apart. Inference is `model.score` in-process and the
exported SavedModel's serving signature.
"""

from __future__ import annotations

import os
import time

import numpy as np
import tensorflow as tf

from benchmarks.modes import Mode
from benchmarks.steps import TrainRunner, median, memory_dataset, paired_ratio, random_images
from mhp_keras.data.base import ImageSet
from mhp_keras.data.pipeline import make_dataset
from mhp_keras.serving.export import export_saved_model

# -- input pipeline -----------------------------------------------------------------------------


def write_pngs(directory: str, n: int, size: int, channels: int) -> list[str]:
    """n random PNGs, a little larger than the model input so the pipeline really resizes."""
    rng = np.random.default_rng(3)
    paths = []
    for i in range(n):
        pixels = rng.integers(0, 256, (size + size // 4, size + size // 4, channels), np.uint8)
        path = os.path.join(directory, f"img_{i:05d}.png")
        tf.io.write_file(path, tf.io.encode_png(pixels))
        paths.append(path)
    return paths


def timed_epoch(runner: TrainRunner, iterator, steps: int) -> float:
    """Seconds for one epoch's worth of `steps` training steps drawn from `iterator`."""
    start = time.perf_counter()
    for _ in range(steps):
        runner.step(iterator)
    return time.perf_counter() - start


def iterator_teardown_s(runner: TrainRunner, dataset: tf.data.Dataset, steps: int) -> float:
    """Seconds to delete a used one-pass iterator: what fit would pay per epoch without the
    repeated iterator that training uses (`experiment.repeated`)."""
    iterator = iter(dataset)
    timed_epoch(runner, iterator, steps)
    start = time.perf_counter()
    del iterator
    return time.perf_counter() - start


def measure_pipeline(runner: TrainRunner, mode: Mode, workdir: str) -> dict:
    """Training epochs fed by the real PNG pipeline against the same steps fed from memory."""
    model = runner.model
    n = mode.pipeline_images
    png_dir = os.path.join(workdir, "pngs")
    os.makedirs(png_dir)
    paths = write_pngs(png_dir, n, model.image_size, model.channels)
    images = ImageSet(labels=np.zeros(n), ids=[f"{i}" for i in range(n)], paths=paths)
    piped = make_dataset(
        images,
        channels=model.channels,
        image_size=model.image_size,
        batch_size=mode.batch,
        training=True,
    )
    in_memory = memory_dataset(random_images(n, model.image_size, model.channels, 4), mode.batch)
    steps = -(-n // mode.batch)
    # As in training: one iterator over the repeated dataset, epochs as runs of `steps` steps.
    piped_it, memory_it = iter(piped.repeat()), iter(in_memory.repeat())
    first = timed_epoch(runner, piped_it, steps)  # decodes, resizes and fills the cache
    piped_s, memory_s = [], []
    for _ in range(mode.pipeline_epochs):
        memory_s.append(timed_epoch(runner, memory_it, steps))
        piped_s.append(timed_epoch(runner, piped_it, steps))
    del piped_it, memory_it
    teardown_s = iterator_teardown_s(runner, piped, steps)
    with_teardown = [s + teardown_s for s in piped_s]
    return {
        "images": n,
        "steps_per_epoch": steps,
        "timed_epochs": mode.pipeline_epochs,
        "first_epoch_s": first,
        "pipeline_epoch_s": median(piped_s),
        "memory_epoch_s": median(memory_s),
        "pipeline_images_per_s": n / median(piped_s),
        "memory_images_per_s": n / median(memory_s),
        "ratio": paired_ratio(memory_s, piped_s),
        "iterator_teardown_s": teardown_s,
        "ratio_with_teardown": paired_ratio(memory_s, with_teardown),
        "note": "epochs 2+ after the cache fill, alternating with memory-fed epochs, each from "
        "one iterator over the repeated dataset as in training; the first (decode + resize + "
        "cache) epoch is first_epoch_s. ratio_with_teardown adds deleting a one-pass iterator "
        "per epoch, which fit would pay without the repeated dataset",
    }


# -- inference ----------------------------------------------------------------------------------


def images_per_s(run, n_images, repeats) -> float:
    """Images per second of `run()` (which processes n_images), median over repeats."""
    run()  # warm-up: traces and allocates
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return n_images / median(seconds)


def measure_inference(model, mode: Mode, workdir: str) -> dict:
    """`model.score` in-process, and the exported SavedModel's serving_default signature."""
    images = random_images(mode.score_images, model.image_size, model.channels, seed=2)
    score_rate = images_per_s(lambda: model.score(images, batch_size=mode.batch), len(images), 3)
    start = time.perf_counter()
    path = export_saved_model(model, os.path.join(workdir, "export"), "conad", 1)
    export_s = time.perf_counter() - start
    serving = tf.saved_model.load(path).signatures["serving_default"]
    batches = [
        tf.constant((images[i : i + mode.batch] * 255).astype(np.uint8))
        for i in range(0, len(images), mode.batch)
    ]

    def serve():
        for batch in batches:
            serving(images=batch)["anomaly_score"].numpy()

    return {
        "hypotheses": model.hypotheses,
        "images": len(images),
        "batch": mode.batch,
        "score_images_per_s": score_rate,
        "saved_model_images_per_s": images_per_s(serve, len(images), 3),
        "export_s": export_s,
    }

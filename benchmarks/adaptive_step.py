"""The adaptive step's split backward pass against two whole backward passes, paired.

    python -m benchmarks.adaptive_step [--hypotheses=8] [--size=32] [--batch=64]
        [--precision=none|bfloat16] [--rounds=8] [--steps=10]

Why it exists: under `loss.adv_balance=adaptive` the generator's update needs the NLL's and L_G's
gradients apart (their norms on the balance layer give lambda). `objective.adaptive_generator_step`
takes them apart only down to the decoder trunk's features and carries their lambda-weighted sum
through the trunk and the encoder once; the MDN, whose mixer reads z, keeps two whole backward
passes. This builds two ConAD models from the same seed and config, one forced to the two whole
passes, and times their training steps round-robin in one process (median step times and the
median of per-round ratios, `benchmarks.steps`), so that load drifting between rounds hits both.
The tests check that both forms make the same update (tests/test_adv_balance.py); this only times
them. Prints one JSON line.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("hypotheses", 8, "heads (H)")
flags.DEFINE_integer("size", 32, "image side in pixels")
flags.DEFINE_integer("channels", 3, "image channels")
flags.DEFINE_integer("batch", 64, "batch size")
flags.DEFINE_enum("precision", "none", ["none", "bfloat16"], "train.mixed_precision")
flags.DEFINE_integer("rounds", 8, "round-robin rounds")
flags.DEFINE_integer("steps", 10, "steps per round and model")
flags.DEFINE_integer("warmup", 3, "untimed steps per model first")


def measure(hypotheses, size, channels, batch, precision, rounds, steps, warmup) -> dict:
    """Median step times (ms) of the split and the two-pass form, and their paired ratio."""
    import keras

    from benchmarks.steps import (
        TrainRunner,
        build_model,
        memory_dataset,
        model_config,
        paired_ratio,
        random_images,
        round_robin,
        train_summary,
    )
    from mhp_keras.training import objective

    split_step = objective.adaptive_generator_step
    two_pass = []
    traced = {"split": 0, "two_passes": 0}  # which form each traced step took

    def forced(model, tape, vae, g_adv, variables, trunk=None):
        whole = any(model is m for m in two_pass)
        traced["two_passes" if whole else "split"] += 1
        return split_step(model, tape, vae, g_adv, variables, None if whole else trunk)

    config = model_config(hypotheses, size, channels, mixed=precision)
    data = memory_dataset(random_images(batch, size, channels), batch)
    objective.adaptive_generator_step = forced
    try:
        runners = {}
        for name in ("split", "two_passes"):
            keras.utils.set_random_seed(0)
            model = build_model(config)
            if name == "two_passes":
                two_pass.append(model)
            runners[name] = TrainRunner(model, data)
            runners[name].warm_up(warmup)
        times = round_robin(runners, rounds, steps)
    finally:
        objective.adaptive_generator_step = split_step
    return {
        "config": dict(hypotheses=hypotheses, size=size, batch=batch, precision=precision),
        "split": train_summary(times["split"], batch),
        "two_passes": train_summary(times["two_passes"], batch),
        "split_over_two_passes": paired_ratio(times["split"], times["two_passes"]),
        "traced": traced,
    }


def main(argv):
    del argv
    result = measure(
        FLAGS.hypotheses,
        FLAGS.size,
        FLAGS.channels,
        FLAGS.batch,
        FLAGS.precision,
        FLAGS.rounds,
        FLAGS.steps,
        FLAGS.warmup,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)

"""Measures mhp_keras's speed, memory and FLOP use on the current machine.

    python -m benchmarks.speed [--quick] [--output_dir=runs/benchmark]

Why it exists: ConAD's promise is that hypotheses are nearly free (one shared trunk, cheap heads),
that the tf.data pipeline keeps training fed, and that the defaults are the fast options: fused
heads, `train.mixed_precision=auto` (bfloat16 on CPUs with native bfloat16, float32 elsewhere) and
`train.jit_compile=auto` (XLA only where timing real steps shows it faster). Each of those is a
claim about this code on real hardware, so this measures them instead of asserting them, and
writes `benchmark.json` and `benchmark.md` into
--output_dir. What each measurement means: benchmarks/README.md. `--quick` trades precision for a
run of under 3 minutes on 2 cores.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from absl import app, flags  # noqa: E402

from benchmarks.harness import run  # noqa: E402
from benchmarks.report import to_markdown  # noqa: E402


def define_flags() -> None:
    """The command-line flags; defined only when run as a script, so importing this module next
    to another with absl flags (predict's --output_dir, in one pytest process) does not clash."""
    flags.DEFINE_bool("quick", False, "Fewer steps and repeats: under 3 minutes on 2 cores.")
    flags.DEFINE_bool("smoke", False, "Test only: one step of everything at tiny sizes.")
    flags.DEFINE_string(
        "output_dir", os.path.join("runs", "benchmark"), "Where benchmark.json and .md are written."
    )


def main(argv):
    del argv
    values = flags.FLAGS
    mode = "smoke" if values.smoke else "quick" if values.quick else "full"
    results = run(mode, values.output_dir)
    print(json.dumps(results, indent=2, sort_keys=True, default=str))
    print(to_markdown(results))


if __name__ == "__main__":
    define_flags()
    app.run(main)

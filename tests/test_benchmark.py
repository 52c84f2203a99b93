"""The speed benchmark (`benchmarks.speed`) end to end in its test-only "smoke" mode: every
measurement runs once, at tiny sizes, and the report has every key. No test looks at a time: on a
shared CI machine they mean nothing. About 25 s on 2 idle cores (building and tracing five small
models dominates), so it is marked slow, like the other tests over about 10 s (the quick loop is
`pytest -m "not slow"`)."""

import json
import math

import pytest

from benchmarks.harness import run
from benchmarks.modes import MODES

TRAIN_KEYS = {"step_ms", "best_step_ms", "images_per_s", "rounds_ms", "first_step_s"}
EXPECTED = {
    "mode": None,
    "settings": None,
    "elapsed_s": None,
    "section_s": {
        "matmul_peak",
        "matmul_peak_end",
        "train",
        "train_big",
        "pipeline",
        "inference",
        "memory",
        "tiled",
        "flops",
    },
    "machine": {
        "cpu_model",
        "cpu_count",
        "cpus_usable",
        "cpu_bf16",
        "cpu_avx512f",
        "platform",
        "python",
        "tensorflow",
        "keras",
        "numpy",
        "gpus",
        "load_average_start",
        "load_average_end",
    },
    "matmul_peak": {"flops_per_s", "sizes", "repeats", "start_and_end_flops_per_s"},
    "train": {
        "image_size",
        "channels",
        "batch",
        "rounds",
        "steps_per_round",
        "by_hypotheses",
        "h8_over_h1",
    },
    "train_big": {"hypotheses", "image_size", "channels", "batch"} | TRAIN_KEYS,
    "separate_heads": {"supported", "speedup", "fused_speedup"} | TRAIN_KEYS,
    "bfloat16": {"supported", "speedup", "checks", "h8_over_h1"} | TRAIN_KEYS,
    "xla": {"supported", "speedup"} | TRAIN_KEYS,
    "pipeline": {
        "images",
        "steps_per_epoch",
        "timed_epochs",
        "first_epoch_s",
        "pipeline_epoch_s",
        "memory_epoch_s",
        "pipeline_images_per_s",
        "memory_images_per_s",
        "ratio",
        "iterator_teardown_s",
        "ratio_with_teardown",
        "note",
    },
    "inference": {
        "hypotheses",
        "images",
        "batch",
        "score_images_per_s",
        "saved_model_images_per_s",
        "export_s",
    },
    "memory": {
        "rss_after_import_mb",
        "rss_after_build_mb",
        "rss_end_mb",
        "peak_rss_mb",
        "hypotheses",
        "image_size",
        "channels",
        "batch",
        "steps",
    },
    "tiled": {"speed", "memory"},
    "mhp_wta": {"supported", "h8_over_h1", "by_hypotheses"},
    "flops": {
        "method",
        "per_image",
        "train_h8_over_h1",
        "mhp_wta_train_h8_over_h1",
        "achieved_train_flops_per_s",
        "fraction_of_matmul_peak",
    },
    "ratios": {
        "train_h8_over_h1",
        "train_h8_over_h1_target",
        "train_h8_over_h1_ok",
        "train_h8_over_h1_bfloat16",
        "h8_over_h1_per_flop_ratio",
        "mhp_wta_h8_over_h1",
        "mhp_wta_h8_over_h1_per_flop_ratio",
        "pipeline_over_memory",
        "pipeline_over_memory_target",
        "pipeline_over_memory_ok",
        "fused_over_separate_heads",
        "bfloat16_over_float32",
        "xla_over_default",
    },
    "recommendations": {"fused_heads", "mixed_precision", "jit_compile"},
}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("benchmark")
    results = run("smoke", str(out))
    return out, results


@pytest.mark.slow
def test_json_has_every_key(smoke):
    out, results = smoke
    with open(out / "benchmark.json") as f:
        stored = json.load(f)
    assert set(stored) == set(EXPECTED)
    for section, keys in EXPECTED.items():
        if keys is not None:
            assert keys <= set(stored[section]), (section, keys - set(stored[section]))
    mode = MODES["smoke"]
    assert set(stored["train"]["by_hypotheses"]) == {str(h) for h in mode.hypotheses}
    for entry in stored["train"]["by_hypotheses"].values():
        assert set(entry) >= TRAIN_KEYS
    for entry in stored["flops"]["per_image"].values():
        assert set(entry) == {
            "forward",
            "encoder_forward",
            "decoder_forward",
            "discriminator_forward",
            "train_step",
        }
        assert entry["train_step"] > entry["forward"] > 0


@pytest.mark.slow
def test_measurements_are_sane(smoke):
    _, results = smoke
    for value in (
        results["ratios"]["train_h8_over_h1"],
        results["ratios"]["mhp_wta_h8_over_h1"],
        results["flops"]["mhp_wta_train_h8_over_h1"],
        results["pipeline"]["ratio"],
        results["inference"]["saved_model_images_per_s"],
        results["memory"]["peak_rss_mb"],
        results["tiled"]["speed"]["tiles_per_s"],
        results["tiled"]["memory"]["peak_rss_mb"],
    ):
        assert value is not None and math.isfinite(value) and value > 0
    # The tiled probe scored the whole big image and returned a map of its size.
    memory = results["tiled"]["memory"]
    side = memory["image_side"]
    assert memory["finite"] and memory["map_shape"] == [1, side, side]
    # Under mixed_bfloat16 the network computes in bfloat16 but NLL and losses stay float32.
    if results["bfloat16"]["supported"]:
        checks = results["bfloat16"]["checks"]
        assert checks["decoder_compute_dtype"] == "bfloat16"
        assert checks["decoder_output_dtype"] == "float32"
        assert checks["nll_dtype"] == checks["loss_dtype"] == checks["d_loss_dtype"] == "float32"
        assert checks["variable_dtype"] == "float32"
        assert checks["loss_finite"] and checks["score_finite"]
    # The global dtype policy is restored after the bfloat16 model is built.
    import keras

    assert keras.config.dtype_policy().name == "float32"


@pytest.mark.slow
def test_markdown_table(smoke):
    out, _ = smoke
    text = (out / "benchmark.md").read_text()
    assert "| measurement | value | note |" in text
    assert "|---|---|---|" in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(rows) >= 15
    assert any("pipeline / in-memory" in row for row in rows)

"""Turns a benchmark's measurements into its verdicts and its two files.

The headline ratios are checked against their targets, the defaults are compared with what the
measurements recommend, and the results are written as `benchmark.json` (every number) and
`benchmark.md` (one table row a measurement, for the README's history).
"""

from __future__ import annotations

import os

from benchmarks.modes import MAIN_H, TARGET_H8_OVER_H1, TARGET_PIPELINE
from mhp_keras.config.defaults import base_config
from mhp_keras.io_utils import write_json_atomic, write_text_atomic


def ratios(results) -> dict:
    """The headline ratios and whether they meet their targets."""
    h8_over_h1 = results["train"]["h8_over_h1"]
    pipeline = results["pipeline"]["ratio"]
    return {
        "train_h8_over_h1": h8_over_h1,
        "train_h8_over_h1_target": TARGET_H8_OVER_H1,
        "train_h8_over_h1_ok": h8_over_h1 <= TARGET_H8_OVER_H1,
        "train_h8_over_h1_bfloat16": results["bfloat16"]["h8_over_h1"],
        # Time ratio over FLOP ratio: how much more than its arithmetic H=8 costs (target 1.15).
        "h8_over_h1_per_flop_ratio": h8_over_h1 / results["flops"]["train_h8_over_h1"],
        "mhp_wta_h8_over_h1": results["mhp_wta"]["h8_over_h1"],
        "mhp_wta_h8_over_h1_per_flop_ratio": (
            results["mhp_wta"]["h8_over_h1"] / results["flops"]["mhp_wta_train_h8_over_h1"]
            if results["mhp_wta"]["h8_over_h1"] and results["flops"]["mhp_wta_train_h8_over_h1"]
            else None
        ),
        "pipeline_over_memory": pipeline,
        "pipeline_over_memory_target": TARGET_PIPELINE,
        "pipeline_over_memory_ok": pipeline >= TARGET_PIPELINE,
        "fused_over_separate_heads": results["separate_heads"]["fused_speedup"],
        "bfloat16_over_float32": results["bfloat16"]["speedup"],
        "xla_over_default": results["xla"]["speedup"],
    }


def recommendations(results) -> dict:
    """Defaults to keep: an option only becomes the default where it clearly wins (> 5%)."""
    defaults = base_config()
    wins = lambda entry: bool(entry["supported"] and entry["speedup"] > 1.05)
    fused_speedup = results["separate_heads"]["fused_speedup"]
    return {
        "fused_heads": {
            "current": defaults.model.fused_heads,
            "recommended": fused_speedup is None or fused_speedup >= 1.0,
        },
        "mixed_precision": {
            "current": defaults.train.mixed_precision,
            "recommended": "bfloat16" if wins(results["bfloat16"]) else "none",
            # bfloat16 is only fast with native support (avx512_bf16 / AMX, TPU, recent GPUs).
            "cpu_bf16": results["machine"]["cpu_bf16"],
        },
        "jit_compile": {"current": defaults.train.jit_compile, "recommended": wins(results["xla"])},
    }


def _fmt(value, spec=".1f", unit=""):
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def _verdict(ok: bool) -> str:
    return "meets target" if ok else "MISSES target"


def markdown_rows(r: dict) -> list[tuple[str, str, str]]:
    t, s, b = r["train"], f"{r['train']['image_size']}x{r['train']['image_size']}", r["train_big"]
    c = t["channels"]
    rows = [
        (
            f"train {s}x{c}, H={h}, batch {t['batch']}",
            _fmt(v["images_per_s"], ".0f", " img/s"),
            f"{v['step_ms']:.0f} ms/step (best {v['best_step_ms']:.0f})",
        )
        for h, v in t["by_hypotheses"].items()
    ]
    big = f"{b['image_size']}x{b['image_size']}x{b['channels']}"
    ratios = r["ratios"]
    rows += [
        (
            f"train {big}, H={b['hypotheses']}, batch {b['batch']}",
            _fmt(b["images_per_s"], ".1f", " img/s"),
            f"{b['step_ms']:.0f} ms/step",
        ),
        (
            f"step time H={MAIN_H} / H=1",
            _fmt(ratios["train_h8_over_h1"], ".2f"),
            f"target <= {TARGET_H8_OVER_H1}: {_verdict(ratios['train_h8_over_h1_ok'])}; "
            f"FLOP ratio {r['flops']['train_h8_over_h1']:.2f}",
        ),
        (
            f"step time H={MAIN_H} / H=1 without the discriminator (MHP-WTA)",
            _fmt(ratios["mhp_wta_h8_over_h1"], ".2f"),
            "FLOP ratio "
            + _fmt(r["flops"]["mhp_wta_train_h8_over_h1"], ".2f")
            + "; time / FLOP ratio "
            + _fmt(ratios["mhp_wta_h8_over_h1_per_flop_ratio"], ".2f")
            + f" (with D: {ratios['h8_over_h1_per_flop_ratio']:.2f}; target <= 1.15)",
        ),
        (
            f"step time H={MAIN_H} / H=1, mixed_bfloat16",
            _fmt(ratios["train_h8_over_h1_bfloat16"], ".2f"),
            "the float32 ratio above carries the target",
        ),
        (
            f"fused / separate heads (H={MAIN_H})",
            _fmt(ratios["fused_over_separate_heads"], ".2f", "x"),
            f"separate heads: {_fmt(r['separate_heads']['images_per_s'], '.0f', ' img/s')}",
        ),
        (
            "pipeline / in-memory training (epochs 2+)",
            _fmt(ratios["pipeline_over_memory"], ".3f"),
            f"target >= {TARGET_PIPELINE}: {_verdict(ratios['pipeline_over_memory_ok'])}; "
            f"{r['pipeline']['ratio_with_teardown']:.3f} counting the "
            f"{r['pipeline']['iterator_teardown_s']:.2f} s iterator teardown per epoch; "
            f"first epoch (cache fill) {r['pipeline']['first_epoch_s']:.2f} s",
        ),
        (
            f"model.score (H={MAIN_H})",
            _fmt(r["inference"]["score_images_per_s"], ".0f", " img/s"),
            "in-process",
        ),
        (
            "SavedModel serving_default",
            _fmt(r["inference"]["saved_model_images_per_s"], ".0f", " img/s"),
            "uint8 input, loaded in-process",
        ),
        (
            f"peak RSS, fit H={MAIN_H} {s}x{c}",
            _fmt(r["memory"]["peak_rss_mb"], ".0f", " MiB"),
            f"VmHWM of a child process; {r['memory']['rss_after_import_mb']:.0f} MiB after imports",
        ),
    ]
    speed, memory = r["tiled"]["speed"], r["tiled"]["memory"]
    rows += [
        (
            f"tiled scoring, one {speed['image_side']}x{speed['image_side']}x{speed['channels']} "
            f"image (tile {speed['tile']}, stride {speed['stride']}, H={speed['hypotheses']})",
            _fmt(speed["images_per_s"], ".2f", " img/s"),
            f"{speed['tiles_per_s']:.0f} tiles/s; {speed['tiles_per_image']} tiles per image",
        ),
        (
            f"peak RSS, tiled scoring of one {memory['image_side']}x{memory['image_side']} image",
            _fmt(memory["peak_rss_mb"], ".0f", " MiB"),
            f"VmHWM of a child process; {memory['rss_before_scoring_mb']:.0f} MiB before scoring",
        ),
    ]
    for h, f in r["flops"]["per_image"].items():
        rows.append(
            (
                f"FLOPs/image {h}",
                f"{f['forward'] / 1e6:.1f} M forward",
                f"{f['train_step'] / 1e6:.1f} M per train step",
            )
        )
    rows += [
        (
            "achieved training FLOP/s",
            _fmt(r["flops"]["achieved_train_flops_per_s"] / 1e9, ".1f", " GFLOP/s"),
            f"{100 * r['flops']['fraction_of_matmul_peak']:.0f}% of the measured matmul peak "
            f"({r['matmul_peak']['flops_per_s'] / 1e9:.0f} GFLOP/s)",
        ),
    ]
    for key, label in (("bfloat16", "mixed_bfloat16"), ("xla", "XLA (jit_compile)")):
        v = r[key]
        note = (
            "not supported: " + str(v["error"])
            if not v["supported"]
            else (f"{v['images_per_s']:.0f} img/s; first step {v['first_step_s']:.1f} s")
        )
        rows.append((f"{label} / default (H={MAIN_H})", _fmt(v["speedup"], ".2f", "x"), note))
    return rows


def to_markdown(r: dict) -> str:
    m = r["machine"]
    cpu = f" ({m['cpu_model']})" if m["cpu_model"] else ""
    lines = [
        f"# mhp_keras benchmark ({r['mode']})",
        "",
        f"{m['cpu_count']} CPUs{cpu}, {m['platform']}, TF {m['tensorflow']}, Keras {m['keras']}; "
        f"load average {m['load_average_start'][0]:.2f} at start, "
        f"{m['load_average_end'][0]:.2f} at end; {r['elapsed_s']:.0f} s. Throughputs are medians "
        "over rounds; ratios are medians of per-round ratios, measured interleaved in one run.",
        "",
        "| measurement | value | note |",
        "|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in markdown_rows(r)]
    rec = r["recommendations"]
    lines += [
        "",
        "Defaults: "
        + "; ".join(f"{k} {v['current']} -> recommended {v['recommended']}" for k, v in rec.items())
        + ".",
    ]
    return "\n".join(lines) + "\n"


def write_outputs(results: dict, output_dir: str) -> None:
    os.makedirs(output_dir, exist_ok=True)
    write_json_atomic(os.path.join(output_dir, "benchmark.json"), results)
    write_text_atomic(os.path.join(output_dir, "benchmark.md"), to_markdown(results))

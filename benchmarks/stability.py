"""Training stability across sizes, image sets and seeds: does the adversarial training diverge,
and does the automatic recovery bring every divergence back?

Trains the shipped texture configs (`configs/textures.py` and `configs/textures_border.py`, the
one with frames of varying width) at each image size and seed, with `train_main.py` in a child
process, and tabulates per run: how it ended, the recoveries, the health warnings, the largest
epoch KL, D's accuracy over the last 10 epochs, and the image and pixel AUROC. Patches are twice
the image size (resized down, as in the demo) up to the photo's limit of 128 px, so 128 px runs
at native resolution and 256 px on patches resized up.

    python -m benchmarks.stability [--sizes=32,64,128,256] [--sets=textures,border]
        [--seeds=0,1,2] [--epochs=100] [--out=/tmp/stability] [-- --config.x=y ...]

Runs are resumable: a run whose workdir holds `metrics.json` is read, not repeated, and a killed
one resumes from its backup. Writes `stability.md` and `stability.json` into `--out`. Slow: the
full grid is 24 runs of 100 epochs (hours on two cores).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time

# Not benchmarks.memory's: that imports TensorFlow, which this parent process never needs.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIGS = {"textures": "configs/textures.py", "border": "configs/textures_border.py"}
MAX_PATCH = 128  # test patches come from the photo's bottom 128 rows


def run_command(config_set: str, size: int, seed: int, epochs: int, workdir: str, extra) -> list:
    return [
        sys.executable,
        os.path.join(REPO_ROOT, "train_main.py"),
        f"--config={os.path.join(REPO_ROOT, CONFIGS[config_set])}",
        f"--workdir={workdir}",
        "--mode=train_and_evaluate",
        f"--config.seed={seed}",
        f"--config.data.image_size={size}",
        f"--config.data.patch_size={min(2 * size, MAX_PATCH)}",
        f"--config.train.epochs={epochs}",
        "--config.eval.report=False",
        *extra,
    ]


def read_history(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "history.csv")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return [{k: float(v) for k, v in row.items() if v not in ("", "NA")} for row in rows]


def read_json(path: str, default):
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return json.load(f)


def summarize(workdir: str, returncode: int | None, stderr: str) -> dict:
    history = read_history(workdir)
    path = os.path.join(workdir, "metrics.json")
    metrics = read_json(path, {})
    recoveries = metrics.get("recoveries")
    if recoveries is None:  # a run that ended in an error: read what the backup recorded
        recoveries = read_json(os.path.join(workdir, "backup", "recoveries.json"), [])
    last = history[-10:]
    d_acc = [min(r["d_acc_real"], r["d_acc_fake"]) for r in last if "d_acc_real" in r]
    ended = "completed" if metrics else ("diverged" if "diverged" in stderr else "error")
    return {
        "ended": ended,
        "returncode": returncode,
        "epochs_logged": len(history),
        "recoveries": len(recoveries),
        "recovery_causes": [r["cause"] for r in recoveries],
        "health_warnings": len(metrics.get("health_warnings", [])),
        "max_kl": max((r["kl"] for r in history if "kl" in r), default=float("nan")),
        "d_acc_last10": sum(d_acc) / len(d_acc) if d_acc else float("nan"),
        "image_auroc": metrics.get("image_auroc"),
        "pixel_auroc": metrics.get("pixel_auroc"),
        "aupro": metrics.get("aupro"),
        "train_seconds": (metrics.get("timings") or {}).get("train_seconds"),
        "error": "" if metrics else stderr.strip()[-400:],
    }


def run_one(config_set, size, seed, epochs, out, extra) -> dict:
    workdir = os.path.join(out, f"{config_set}-{size}px-seed{seed}")
    row = {"set": config_set, "size": size, "seed": seed, "workdir": workdir}
    if os.path.exists(os.path.join(workdir, "metrics.json")):
        return row | summarize(workdir, 0, "")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    start = time.perf_counter()
    result = subprocess.run(
        run_command(config_set, size, seed, epochs, workdir, extra),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
    )
    row["wall_seconds"] = time.perf_counter() - start
    return row | summarize(workdir, result.returncode, result.stderr)


def _number(value, digits=3) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def markdown(rows: list[dict]) -> str:
    lines = [
        "| set | px | seed | ended | recoveries | health warnings | max KL | D acc (last 10) "
        "| image AUROC | pixel AUROC | AUPRO | training (min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        minutes = None if r["train_seconds"] is None else r["train_seconds"] / 60
        lines.append(
            f"| {r['set']} | {r['size']} | {r['seed']} | {r['ended']} | {r['recoveries']} "
            f"| {r['health_warnings']} | {_number(r['max_kl'], 1)} "
            f"| {_number(r['d_acc_last10'], 2)} "
            f"| {_number(r['image_auroc'])} | {_number(r['pixel_auroc'])} "
            f"| {_number(r['aupro'])} | {_number(minutes, 0)} |"
        )
    unrecovered = sum(r["ended"] != "completed" for r in rows)
    recovered = sum(r["recoveries"] for r in rows)
    lines.append("")
    lines.append(
        f"{len(rows)} runs: {len(rows) - unrecovered} completed, {unrecovered} did not; "
        f"{recovered} automatic recoveries in all."
    )
    return "\n".join(lines)


def main() -> None:
    from absl import app, flags

    flags.DEFINE_list("sizes", ["32", "64", "128", "256"], "Image sizes.")
    flags.DEFINE_list("sets", list(CONFIGS), f"Image sets, of {sorted(CONFIGS)}.")
    flags.DEFINE_list("seeds", ["0", "1", "2"], "Model seeds.")
    flags.DEFINE_integer("epochs", 100, "Epochs per run.")
    flags.DEFINE_string("out", "/tmp/stability", "Folder of the runs and the table.")

    def run(argv):
        extra = argv[1:]  # after "--": config overrides for every run
        f = flags.FLAGS
        unknown = sorted(set(f.sets) - set(CONFIGS))
        if unknown:
            raise app.UsageError(f"--sets: {unknown} are not among {sorted(CONFIGS)}.")
        os.makedirs(f.out, exist_ok=True)
        rows = []
        for config_set in f.sets:
            for size in map(int, f.sizes):
                for seed in map(int, f.seeds):
                    row = run_one(config_set, size, seed, f.epochs, f.out, extra)
                    rows.append(row)
                    print(json.dumps({k: row[k] for k in ("set", "size", "seed", "ended")}))
                    sys.stdout.flush()
        table = markdown(rows)
        with open(os.path.join(f.out, "stability.md"), "w") as out:
            out.write(table + "\n")
        with open(os.path.join(f.out, "stability.json"), "w") as out:
            json.dump(rows, out, indent=1)
        print(table)

    app.run(run)


if __name__ == "__main__":
    main()

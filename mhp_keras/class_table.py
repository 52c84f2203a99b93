"""The per-class results table (`--mode=benchmark_classes`), shaped like the paper's CIFAR-10 table.

Every class is made the normal class in turn and trained with N seeds; the mean and standard
deviation of each metric go into a per-class table (CSV, Markdown and JSON).
"""

from __future__ import annotations

import copy
import csv
import io
import os

import keras
import numpy as np

from mhp_keras.data import load_data
from mhp_keras.errors import ConfigError
from mhp_keras.io_utils import write_json_atomic, write_text_atomic

TABLE_METRICS = ("image_auroc", "image_ap", "pixel_auroc", "aupro")


def _class_names(config) -> list[str]:
    """Every class of the dataset, or the subset named in eval.classes (checked against it)."""
    names = load_data(config).class_names
    wanted = [c.strip() for c in str(config.eval.classes).split(",") if c.strip()]
    unknown = [c for c in wanted if c not in names]
    if unknown:
        raise ConfigError(
            f"eval.classes names unknown classes {unknown}: expected some of {names}."
        )
    return wanted or names


def summarise(per_run: dict[str, list[dict]]) -> list[dict]:
    """One row per class: mean and std over seeds of each metric present, plus a mean row."""
    rows = []
    for name, runs in per_run.items():
        row = {"class": name, "seeds": len(runs)}
        for key in TABLE_METRICS:
            values = [r[key] for r in runs if r.get(key) is not None]
            if values:
                row[f"{key}_mean"] = float(np.mean(values))
                row[f"{key}_std"] = float(np.std(values))
        rows.append(row)
    mean_row = {"class": "mean", "seeds": min((r["seeds"] for r in rows), default=0)}
    for key in TABLE_METRICS:
        means = [r[f"{key}_mean"] for r in rows if f"{key}_mean" in r]
        if means:
            mean_row[f"{key}_mean"] = float(np.mean(means))
            mean_row[f"{key}_std"] = float(np.std(means))
    return rows + [mean_row]


def to_csv(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def to_markdown(rows: list[dict]) -> str:
    metrics = [k for k in TABLE_METRICS if any(f"{k}_mean" in r for r in rows)]
    lines = ["| class | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for row in rows:
        cells = [
            f"{row[f'{k}_mean']:.3f} ± {row[f'{k}_std']:.3f}" if f"{k}_mean" in row else "–"
            for k in metrics
        ]
        label = f"**{row['class']}**" if row["class"] == "mean" else row["class"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_all_classes(config, workdir: str, seeds: int = 1, strategy: str = "default") -> dict:
    """Trains and evaluates every class x seed under workdir/<class>/seed_<s>; writes the tables."""
    from mhp_keras.experiment import run

    per_run: dict[str, list[dict]] = {}
    for name in _class_names(config):
        for seed in range(seeds):
            run_config = copy.deepcopy(config)
            run_config.data.normal_class = name
            run_config.seed = int(config.seed) + seed
            keras.backend.clear_session()
            metrics = run(
                run_config,
                os.path.join(workdir, f"class_{name}", f"seed_{seed}"),
                strategy=strategy,
            )
            per_run.setdefault(name, []).append({k: metrics.get(k) for k in TABLE_METRICS})
    rows = summarise(per_run)
    paths = {
        "csv": os.path.join(workdir, "classes.csv"),
        "markdown": os.path.join(workdir, "classes.md"),
        "json": os.path.join(workdir, "classes.json"),
    }
    write_text_atomic(paths["csv"], to_csv(rows))
    write_text_atomic(paths["markdown"], to_markdown(rows))
    write_json_atomic(paths["json"], {"rows": rows, "runs": per_run})
    return {**paths, "rows": rows}

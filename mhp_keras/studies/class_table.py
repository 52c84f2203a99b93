"""Results tables of runs with each class normal in turn, shaped like the paper's CIFAR-10 table.

Two tables come out of the same per-run metrics (the runs themselves are
`mhp_keras.studies.ablation`'s):

* the per-class table of `--mode=benchmark_classes`: one row per class, the mean and standard
  deviation over seeds of each metric (`classes.csv`, `classes.md`, `classes.json`);
* the ablation table of `--mode=ablation`: image AUROC of each variant (VAE, VAE-GAN, MHP-WTA-H,
  ConAD-H) for each class, mean ± std over seeds, and each variant's mean over classes ± its std
  over classes (`ablation.csv`, `.md`, `.json`, and the bar chart `ablation.png`).

Both are the same arithmetic (`summarise`, once per variant for the ablation). Standard deviations
are population ones (numpy's default, ddof=0), as three seeds give no better estimate either way.
This module reads no data and imports no TensorFlow, so it is cheap to call after every run.
"""

from __future__ import annotations

import csv
import io
import math
import os

import numpy as np

from mhp_keras.io_utils import atomic_path, write_json_atomic, write_text_atomic
from mhp_keras.scoring.defect_sizes import THIRDS
from mhp_keras.training.mechanism_names import NAMES

TABLE_METRICS = ("image_auroc", "image_ap", "pixel_auroc", "aupro")
# The last epoch's mechanism diagnostics (training/diagnostics.py), summarised per variant: whether
# the discriminator reaches the generator, how far the heads differ, how sharp the best guess is.
MECHANISM_METRICS = NAMES
# Per third of the defects' areas (scoring/defect_sizes.py), with masks: are small defects found?
DEFECT_SIZE_METRICS = tuple(
    f"{metric}_{third}" for metric in ("image_auroc", "aupro") for third in THIRDS
)
SUMMARY_METRICS = TABLE_METRICS + MECHANISM_METRICS + DEFECT_SIZE_METRICS
# The ablation compares variants on the paper's one metric; the others stay in its JSON.
ABLATION_METRIC = "image_auroc"
MEAN_ROW = "mean"


def defined(value) -> bool:
    # null in a reused metrics.json and NaN in a fresh one both mean "undefined" (for example
    # AUROC without anomalous test images); either would turn a mean into NaN.
    return value is not None and math.isfinite(value)


def summarise(per_run: dict[str, list[dict]]) -> list[dict]:
    """One row per class: mean and std over seeds of each metric present, plus a mean row (the
    mean over classes of the class means, and their std over classes)."""
    rows = []
    for name, runs in per_run.items():
        row = {"class": name, "seeds": len(runs)}
        for key in SUMMARY_METRICS:
            values = [r[key] for r in runs if defined(r.get(key))]
            if values:
                row[f"{key}_mean"] = float(np.mean(values))
                row[f"{key}_std"] = float(np.std(values))
        rows.append(row)
    mean_row = {"class": MEAN_ROW, "seeds": min((r["seeds"] for r in rows), default=0)}
    for key in SUMMARY_METRICS:
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


def mean_std_cell(row: dict, key: str) -> str:
    """A row's "0.750 ± 0.012" (mean ± std) for metric `key`, or "–" where it has none."""
    if f"{key}_mean" not in row:
        return "–"
    return f"{row[f'{key}_mean']:.3f} ± {row[f'{key}_std']:.3f}"


def _label(name: str) -> str:
    return f"**{name}**" if name == MEAN_ROW else name


def to_markdown(rows: list[dict]) -> str:
    metrics = [k for k in TABLE_METRICS if any(f"{k}_mean" in r for r in rows)]
    lines = ["| class | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for row in rows:
        cells = [mean_std_cell(row, k) for k in metrics]
        lines.append(f"| {_label(row['class'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _paths(workdir: str, stem: str, extensions: dict) -> dict:
    return {key: os.path.join(workdir, f"{stem}.{ext}") for key, ext in extensions.items()}


_TABLES = {"csv": "csv", "markdown": "md", "json": "json"}


def class_table_paths(workdir: str) -> dict:
    """Where `write_class_tables` writes: {"csv", "markdown", "json"} -> path."""
    return _paths(workdir, "classes", _TABLES)


def ablation_paths(workdir: str) -> dict:
    """Where `write_ablation_tables` writes: {"csv", "markdown", "json", "png"} -> path."""
    return _paths(workdir, "ablation", {**_TABLES, "png": "png"})


def write_class_tables(workdir: str, per_run: dict[str, list[dict]]) -> dict:
    """`classes.csv`, `classes.md` and `classes.json` (rows and every run's metrics), atomically."""
    rows = summarise(per_run)
    paths = class_table_paths(workdir)
    write_text_atomic(paths["csv"], to_csv(rows))
    write_text_atomic(paths["markdown"], to_markdown(rows))
    write_json_atomic(paths["json"], {"rows": rows, "runs": per_run})
    return {**paths, "rows": rows}


# -- the ablation: variants x classes ------------------------------------------------------------


def summarise_variants(results: dict[str, dict[str, list[dict]]]) -> dict[str, list[dict]]:
    """`summarise` of each variant: {variant: [one row per class..., mean row]}."""
    return {variant: summarise(per_class) for variant, per_class in results.items()}


def ablation_csv(table: dict[str, list[dict]]) -> str:
    """One line per variant and class (and the variant's mean row): a long table, which loads
    into a data frame without parsing "mean ± std" strings."""
    return to_csv([{"variant": variant, **row} for variant, rows in table.items() for row in rows])


def _train_seconds(per_class: dict[str, list[dict]]) -> float | None:
    values = [r["train_seconds"] for runs in per_class.values() for r in runs]
    values = [v for v in values if defined(v)]
    return float(np.mean(values)) if values else None


def ablation_markdown(results: dict[str, dict[str, list[dict]]], seeds: int) -> str:
    """Classes down, variants across (ten classes fit a page that way), then the **mean** row.

    A cell with fewer runs than `seeds` says so, e.g. "(1/3 seeds)", so that a table written
    while the runs are still going is not mistaken for the final one.
    """
    table = summarise_variants(results)
    variants = list(results)
    classes = list(next(iter(results.values()), {}))
    done = sum(len(runs) for per_class in results.values() for runs in per_class.values())
    total = len(variants) * len(classes) * seeds
    lines = [
        f"Image AUROC, mean ± std over {seeds} seed{'s' if seeds != 1 else ''} per class; "
        "**mean**: the mean over classes of the class means ± their std over classes. "
        f"{done} of {total} runs.",
        "",
        "| class | " + " | ".join(variants) + " |",
        "|---" * (len(variants) + 1) + "|",
    ]
    for i, name in enumerate([*classes, MEAN_ROW]):
        cells = []
        for variant in variants:
            row = table[variant][i]
            cell = mean_std_cell(row, ABLATION_METRIC)
            runs = [len(r) for r in results[variant].values()]
            complete = all(n == seeds for n in runs) if name == MEAN_ROW else row["seeds"] == seeds
            if cell != "–" and not complete:
                cell += " (partial)" if name == MEAN_ROW else f" ({row['seeds']}/{seeds} seeds)"
            cells.append(cell)
        lines.append(f"| {_label(name)} | " + " | ".join(cells) + " |")
    seconds = [_train_seconds(results[v]) for v in variants]
    lines.append(
        "| train time / run | "
        + " | ".join("–" if s is None else f"{s:.0f} s" for s in seconds)
        + " |"
    )
    paired = paired_lines(results)
    return "\n".join(lines + ["", *variant_summary(table), *paired]) + "\n"


def _scores(runs: list[dict]) -> list[float]:
    """The runs' defined image AUROCs."""
    return [r[ABLATION_METRIC] for r in runs if defined(r.get(ABLATION_METRIC))]


def _class_means(per_class: dict[str, list[dict]]) -> dict[str, float]:
    """{class: mean image AUROC over its seeds} for the classes with at least one defined run."""
    scores = {name: _scores(runs) for name, runs in per_class.items()}
    return {name: float(np.mean(values)) for name, values in scores.items() if values}


def _seed_spread(per_class: dict[str, list[dict]]) -> float | None:
    """The mean over classes of the std over seeds, where a class has two or more seeds."""
    spreads = [float(np.std(v)) for v in map(_scores, per_class.values()) if len(v) > 1]
    return float(np.mean(spreads)) if spreads else None


def paired_differences(results: dict[str, dict[str, list[dict]]]) -> list[dict]:
    """Each variant against the first (the reference, e.g. the VAE), paired by class: over the
    classes both have, the mean and std over classes of the difference of their class means,
    how many classes are above, and each one's seed-to-seed spread (None with one seed)."""
    variants = list(results)
    if len(variants) < 2:
        return []
    reference = _class_means(results[variants[0]])
    rows = []
    for variant in variants[1:]:
        means = _class_means(results[variant])
        shared = [c for c in means if c in reference]
        if not shared:
            continue
        diffs = np.array([means[c] - reference[c] for c in shared])
        rows.append(
            {
                "variant": variant,
                "reference": variants[0],
                "classes": len(shared),
                "mean": float(diffs.mean()),
                "std": float(diffs.std()),
                "above": int((diffs > 0).sum()),
                "seed_spread": _seed_spread(results[variant]),
                "reference_seed_spread": _seed_spread(results[variants[0]]),
            }
        )
    return rows


def paired_lines(results: dict[str, dict[str, list[dict]]]) -> list[str]:
    """The paired differences as markdown lines (none for a single variant)."""
    rows = paired_differences(results)
    if not rows:
        return []

    def spread(value):
        return "–" if value is None else f"{value:.3f}"

    lines = [
        "",
        f"Paired by class against {rows[0]['reference']} (image AUROC; the difference of the "
        "class means over the classes both have; seed spread: the mean over classes of the std "
        "over seeds, – with one seed):",
        "",
        "| variant | classes | mean difference | std over classes | classes above | seed spread "
        "(variant / reference) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} − {r['reference']} | {r['classes']} | {r['mean']:+.3f} | "
            f"{r['std']:.3f} | {r['above']} of {r['classes']} | {spread(r['seed_spread'])} / "
            f"{spread(r['reference_seed_spread'])} |"
        )
    return lines


def variant_summary(table: dict[str, list[dict]]) -> list[str]:
    """Lines of the per-variant tables: every metric any run has (the pixel metrics with masks,
    the mechanism diagnostics once logged), as the mean over classes of the class means; with
    masks, a second table by defect size."""
    means = {variant: rows[-1] for variant, rows in table.items()}
    lines = _variant_table(
        means,
        TABLE_METRICS + MECHANISM_METRICS,
        "Per variant, mean over classes ± std over classes (the mechanism diagnostics are the "
        "last epoch's; head_diversity is 0 for one head; effective_heads is exp of the entropy of "
        "the winner shares):",
    )
    sizes = _variant_table(
        means,
        DEFECT_SIZE_METRICS,
        "By defect size: the anomalous test images in thirds by mask area (small, medium, "
        "large), each against all normal test images:",
    )
    return lines + ([""] if lines and sizes else []) + sizes


def _variant_table(means: dict[str, dict], keys, title: str) -> list[str]:
    metrics = [k for k in keys if any(f"{k}_mean" in r for r in means.values())]
    if not metrics:
        return []
    lines = [
        title,
        "",
        "| variant | " + " | ".join(metrics) + " |",
        "|---" * (len(metrics) + 1) + "|",
    ]
    for variant, row in means.items():
        lines.append(f"| {variant} | " + " | ".join(mean_std_cell(row, k) for k in metrics) + " |")
    return lines


def plot_ablation(path: str, results: dict[str, dict[str, list[dict]]], seeds: int) -> str:
    """Grouped bars: one group per class and a "mean" group, one bar per variant; error bars are
    the std over seeds (over classes in the mean group). Written atomically."""
    from matplotlib.figure import Figure

    table = summarise_variants(results)
    variants = list(results)
    groups = [*next(iter(results.values()), {}), MEAN_ROW]
    width = 0.8 / max(len(variants), 1)
    fig = Figure(
        figsize=(max(6.0, 2.0 + len(groups) * (0.3 + 0.22 * len(variants))), 4.2),
        layout="constrained",
    )
    ax = fig.subplots()
    lows = []
    for k, variant in enumerate(variants):
        rows = table[variant]
        x = np.arange(len(groups)) + (k - (len(variants) - 1) / 2) * width
        mean = np.array([r.get(f"{ABLATION_METRIC}_mean", np.nan) for r in rows], dtype=float)
        std = np.array([r.get(f"{ABLATION_METRIC}_std", np.nan) for r in rows], dtype=float)
        shown = np.isfinite(mean)
        # A class without a finished run yet gets no bar rather than a bar of height 0.
        ax.bar(x[shown], mean[shown], width, yerr=std[shown], capsize=2, label=variant)
        lows.extend(mean[shown] - std[shown])
    ax.axvline(len(groups) - 1.5, color="grey", linewidth=0.8)
    ax.set_xticks(np.arange(len(groups)), groups, rotation=30 if len(groups) > 8 else 0)
    # AUROCs of the variants differ by a few hundredths: from 0 the bars would look equal.
    bottom = max(0.0, math.floor((min(lows, default=0.5) - 0.05) * 20) / 20)
    ax.set_ylim(bottom, 1.0)
    if bottom < 0.5:
        ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)  # chance
    ax.set_ylabel("image AUROC")
    ax.set_xlabel("normal class")
    ax.set_title(
        f"Image AUROC, mean ± std over {seeds} seed{'s' if seeds != 1 else ''} "
        "(mean: ± std over classes)",
        fontsize=10,
    )
    # Outside the axes: inside, it would hide the bars of the first or last classes.
    fig.legend(loc="outside right upper", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def write_ablation_tables(
    workdir: str, results: dict[str, dict[str, list[dict]]], seeds: int
) -> dict:
    """`ablation.csv`, `.md`, `.json` (the table and every run's metrics) and `.png`, atomically.

    `results` is {variant: {class: [one dict of metrics per finished seed]}}, every class listed
    even before its first run, in the order of the columns and rows.
    """
    table = summarise_variants(results)
    paths = ablation_paths(workdir)
    write_text_atomic(paths["csv"], ablation_csv(table))
    write_text_atomic(paths["markdown"], ablation_markdown(results, seeds))
    classes = list(next(iter(results.values()), {}))
    payload = {
        "metric": ABLATION_METRIC,
        "variants": list(results),
        "classes": classes,
        "seeds": seeds,
        "runs_done": sum(len(r) for per_class in results.values() for r in per_class.values()),
        "runs_total": len(results) * len(classes) * seeds,
        "table": table,
        "paired": paired_differences(results),
        "runs": results,
    }
    write_json_atomic(paths["json"], payload)
    plot_ablation(paths["png"], results, seeds)
    return {**paths, "table": table}

"""The paper's ablation in one command: variants x classes x seeds (`--mode=ablation`).

The paper's baselines (VAE, VAE-GAN, MHP-WTA-H) and ConAD-H are settings of one model
(docs/design.md, "The paper's variants"), and its CIFAR-10 table is their image AUROC with each
class normal in turn, over several seeds: hours of runs. This module runs them one after another
through `mhp_keras.training.experiment.run`, each in
`<workdir>/<variant>/class_<name>/seed_<s>/`, and
keeps a kill cheap:

* a run whose `metrics.json` holds exactly the config it would run is not run again: its metrics
  are reused;
* a run killed mid-way resumes from its last epoch (experiment.run's backup: same folder, same
  config);
* the tables (`mhp_keras.studies.class_table`) are rewritten atomically after every finished run;
* `train.jit_compile=auto` calibrates once per step cost (`<workdir>/jit_choices.json`, by
  `mhp_keras.training.jit_shared.cost_key`), not once per run: 60 runs share 3 calibrations.

`--mode=benchmark_classes` is the same loop with one variant, the config as given, in
`<workdir>/class_<name>/seed_<s>/`, writing the per-class tables.

On MVTec AD (`data.name=mvtec`), whose normal class is always "good", the categories take the
classes' place (`eval.classes`, default `data.category`): one command gives the variants' image
and pixel metrics per category, the per-variant table carrying pixel AUROC and AUPRO.

Runs go seed by seed, class by class, variants innermost: after the first seed every class has
every variant, a paired comparison, long before the last seed finishes. Every variant of a class
and seed gets the same `seed`, so the variants differ only in their settings.

TensorFlow is imported only once the variants are checked, so a misspelt variant name is reported
at once rather than after TensorFlow's start-up.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import time

from mhp_keras.config import legacy
from mhp_keras.data import load_data, mvtec
from mhp_keras.errors import ConfigError, UserError
from mhp_keras.studies import class_table
from mhp_keras.studies.variants import (  # noqa: F401 (the study's public names)
    AS_GIVEN,
    VARIANT_PATTERNS,
    Variant,
    parse_variant,
    parse_variants,
)

# The XLA calibrations the runs share (mhp_keras.training.jit_shared.SHARED_FILE, without
# importing TF).
JIT_CHOICES = "jit_choices.json"


def check_source(config, mode: str) -> None:
    """Refuses datasets whose classes cannot take turns as the normal one."""
    if config.data.normal_dir:
        raise ConfigError(
            f"data.normal_dir={config.data.normal_dir!r} holds one normal class, so there are no "
            "classes to take turns: use --mode=train_and_evaluate, or class folders (data.root) "
            f"for --mode={mode}."
        )


def class_names(config) -> list[str]:
    """Every class that can be the normal one, or the subset named in eval.classes (checked).

    MVTec AD's normal class is always "good", so there its categories take turns instead: the
    ones in eval.classes, or data.category alone (the paper's per-category table is
    `--config.eval.classes=bottle,cable,...`).
    """
    wanted = [c.strip() for c in str(config.eval.classes).split(",") if c.strip()]
    if config.data.name == "mvtec":
        flag = "eval.classes" if wanted else "data.category"
        wanted = wanted or [str(config.data.category)]
        _check_known(wanted, mvtec.categories(config.data.root), flag, config.data.root)
        return wanted
    names = _trainable_classes(config)
    _check_known(wanted, names, "eval.classes", config.data.root)
    return wanted or names


def _check_known(wanted: list[str], names: list[str], flag: str, root) -> None:
    """A ConfigError naming `flag` unless every one of `wanted` is one of `names`."""
    unknown = [c for c in wanted if c not in names]
    if unknown:
        raise ConfigError(
            f"{flag} names classes {unknown} that are not in data.root={root!r}: "
            f"expected some of {names}."
        )


def _trainable_classes(config) -> list[str]:
    """The data set's classes that have training images."""
    try:
        names = load_data(config).class_names
    except ConfigError as error:
        # The config's data.normal_class need not name a class of this data set (configs/folders.py
        # says "good"); every run sets its own, so any valid one lists the classes.
        probe = copy.deepcopy(config)
        probe.data.normal_class = "0"
        try:
            names = load_data(probe).class_names
        except UserError:
            raise error from None
    if config.data.name == "folders":
        # A class with test images only (a defect type) has nothing to train on.
        train = os.path.join(config.data.root, "train")
        names = [n for n in names if os.path.isdir(os.path.join(train, n))]
    return names


@dataclasses.dataclass(frozen=True)
class Run:
    """One cell of the grid: a variant, a normal class and a seed offset, in its own folder."""

    variant: Variant
    class_name: str
    seed: int
    workdir: str

    @property
    def name(self) -> str:
        parts = (self.variant.name, f"class_{self.class_name}", f"seed_{self.seed}")
        return "/".join(p for p in parts if p)

    def config(self, config):
        """The config this run trains: the variant's settings, its class and seed.

        eval.variants and eval.classes are set to this run's own, so that the stored config does
        not depend on which other runs the command had, and adding a variant or a class later
        reuses every finished run.
        """
        config = self.variant.apply(config)
        if config.data.name == "mvtec":  # normal is always "good": the categories take turns
            config.data.category = self.class_name
        else:
            config.data.normal_class = self.class_name
        config.seed = int(config.seed) + self.seed
        config.eval.variants = self.variant.name
        config.eval.classes = self.class_name
        return config


def grid(variants: list[Variant], classes: list[str], seeds: int, workdir: str) -> list[Run]:
    return [
        Run(v, c, s, os.path.join(workdir, v.name, f"class_{c}", f"seed_{s}"))
        for s in range(seeds)
        for c in classes
        for v in variants
    ]


def stored_metrics(run_dir: str, expected_config: dict) -> dict | None:
    """The metrics of a finished run in `run_dir` made with exactly `expected_config` (a key added
    since reads as its value before, and the data's location may differ:
    `mhp_keras.config.legacy`), else None.

    metrics.json is written atomically as a run's last step, so it exists only for finished runs.
    """
    try:
        with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as f:
            metrics = json.load(f)
    except (OSError, ValueError):
        return None
    stored = metrics.get("config")
    if not isinstance(stored, dict):
        return None
    # Keys added since the run are read with their earlier behaviour (mhp_keras.config.legacy).
    # A moved data set (data.root) is still the same run: legacy.LOCATION_KEYS.
    return metrics if not legacy.result_changes(stored, expected_config) else None


def run_record(metrics: dict, seed: int) -> dict:
    """What the tables keep of a run: its seed offset, the table metrics present (pixel metrics
    only with masks) and its training time."""
    record = {"seed": seed}
    for key in class_table.TABLE_METRICS:
        if key in metrics:
            record[key] = _finite_or_none(metrics[key])
    timings = metrics.get("timings", {})
    # Every epoch's time where history.csv has it (a run resumed after its last epoch trained
    # nothing in its last process), else the last process's.
    record["train_seconds"] = timings.get("train_seconds_all_epochs") or timings.get(
        "train_seconds"
    )
    # The last epoch's mechanism diagnostics, per variant in the tables.
    for key, value in (metrics.get("mechanism") or {}).items():
        if key in class_table.MECHANISM_METRICS:
            record[key] = _finite_or_none(value)
    # Per third of the defects' areas, flattened: aupro_small, image_auroc_large, ...
    for row in metrics.get("by_defect_size") or []:
        for metric in ("image_auroc", "aupro"):
            key = f"{metric}_{row.get('third')}"
            if key in class_table.DEFECT_SIZE_METRICS:
                record[key] = _finite_or_none(row.get(metric))
    return record


def _finite_or_none(value):
    """None for an undefined metric (null in a reused metrics.json, NaN in a fresh one)."""
    return value if class_table.defined(value) else None


def format_duration(seconds: float) -> str:
    """95 -> "95 s", 725 -> "12 min", 4320 -> "1 h 12 min"."""
    seconds = max(0, round(seconds))
    if seconds < 100:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


def progress_line(
    label: str,
    done: int,
    total: int,
    reused: int,
    last: str,
    auroc: float | None,
    seconds: float | None,
    mean_seconds: float | None,
) -> str:
    """'ablation: 7/60 runs done (3 reused), last conad-8/class_cat/seed_1 AUROC 0.681 in 95 s;
    ETA 1 h 12 min'. `seconds` None: the last run was reused. `mean_seconds`: the mean time of
    the runs trained by this process (None before the first), which times the runs left."""
    score = f"{auroc:.3f}" if class_table.defined(auroc) else "n/a"
    how = "reused" if seconds is None else f"in {format_duration(seconds)}"
    if done >= total:
        eta = "all done"
    elif mean_seconds is None:
        eta = "ETA unknown (nothing trained yet)"
    else:
        eta = f"ETA {format_duration(mean_seconds * (total - done))}"
    runs = f"{done}/{total} runs done ({reused} reused)"
    return f"{label}: {runs}, last {last} AUROC {score} {how}; {eta}"


def run_grid(
    config,
    runs: list[Run],
    write_tables,
    results: dict,
    *,
    label: str,
    strategy: str = "default",
    overwrite: bool = False,
    jit_choices: str | None = None,
) -> dict:
    """Runs (or reuses) every run in order, filling `results[variant][class]` with run records
    and calling `write_tables(results)` after every trained run (and once at the end if reused
    runs came after it), so that a kill loses at most the run in progress. `jit_choices`: the
    file where runs of one step cost share their XLA calibration (`--overwrite` clears it)."""
    import contextlib

    from mhp_keras.training import jit_shared

    if jit_choices and overwrite and os.path.exists(jit_choices):
        os.remove(jit_choices)
    with jit_shared.shared_choices(jit_choices) if jit_choices else contextlib.nullcontext():
        return _run_cells(config, runs, write_tables, results, label, strategy, overwrite)


def _run_cells(config, runs, write_tables, results, label, strategy, overwrite) -> dict:
    """`run_grid`'s loop."""
    import keras

    from mhp_keras.training import distribute
    from mhp_keras.training.experiment import config_dict, run

    # Under multi-worker training every worker takes part in every run; one writes the tables.
    chief = distribute.writes_run_files(strategy)
    reused, trained_seconds, unwritten = 0, [], False
    for done, cell in enumerate(runs, start=1):
        run_config = cell.config(config)
        metrics = stored_metrics(cell.workdir, config_dict(run_config))
        seconds = None
        if metrics is None:
            if unwritten and chief:  # reused results on disk before the hours of training
                write_tables(results)
            keras.backend.clear_session()
            start = time.perf_counter()
            metrics = run(run_config, cell.workdir, strategy=strategy, overwrite=overwrite)
            seconds = time.perf_counter() - start
            trained_seconds.append(seconds)
        else:
            reused += 1
        results[cell.variant.name][cell.class_name].append(run_record(metrics, cell.seed))
        unwritten = seconds is None
        if not unwritten and chief:
            write_tables(results)
        mean = sum(trained_seconds) / len(trained_seconds) if trained_seconds else None
        auroc = metrics.get("image_auroc")
        line = progress_line(label, done, len(runs), reused, cell.name, auroc, seconds, mean)
        print(line, flush=True)
    if unwritten and chief:
        write_tables(results)
    return results


def run_ablation(
    config, workdir: str, seeds: int = 1, strategy: str = "default", overwrite: bool = False
) -> dict:
    """`--mode=ablation`: every variant of eval.variants x class x seed; the ablation tables."""
    variants = parse_variants(config)
    check_source(config, "ablation")
    classes = class_names(config)
    results = {v.name: {c: [] for c in classes} for v in variants}
    run_grid(
        config,
        grid(variants, classes, seeds, workdir),
        lambda r: class_table.write_ablation_tables(workdir, r, seeds),
        results,
        label="ablation",
        strategy=strategy,
        overwrite=overwrite,
        jit_choices=os.path.join(workdir, JIT_CHOICES),
    )
    table = class_table.summarise_variants(results)
    means = ", ".join(
        f"{v} {class_table.mean_std_cell(rows[-1], class_table.ABLATION_METRIC)}"
        for v, rows in table.items()
    )
    paths = class_table.ablation_paths(workdir)
    summary = f"RESULT ablation image AUROC (mean ± std over classes): {means}; {paths['markdown']}"
    return {**paths, "table": table, "results": results, "summary": summary}


def run_benchmark_classes(
    config, workdir: str, seeds: int = 1, strategy: str = "default", overwrite: bool = False
) -> dict:
    """`--mode=benchmark_classes`: the ablation with one variant, the config as given, and the
    per-class table of every metric."""
    check_source(config, "benchmark_classes")
    classes = class_names(config)
    results = {AS_GIVEN.name: {c: [] for c in classes}}
    run_grid(
        config,
        grid([AS_GIVEN], classes, seeds, workdir),
        lambda r: class_table.write_class_tables(workdir, r[AS_GIVEN.name]),
        results,
        label="benchmark_classes",
        strategy=strategy,
        overwrite=overwrite,
        jit_choices=os.path.join(workdir, JIT_CHOICES),
    )
    paths = class_table.class_table_paths(workdir)
    summary = f"RESULT per-class table written to {paths['markdown']}"
    return {**paths, "rows": class_table.summarise(results[AS_GIVEN.name]), "summary": summary}


# `--mode=ablation` and `--mode=benchmark_classes` name these two runners in the one mode
# registry, mhp_keras/training/modes.py.

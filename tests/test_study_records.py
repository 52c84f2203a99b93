"""What the studies keep of each run: MVTec AD categories as the ablation's classes, every
epoch's time and the mechanism diagnostics read from history.csv (also for a run resumed after
its last epoch), and the per-variant table of those diagnostics. Checked against hand-worked
values."""

import os

import numpy as np
import pytest
from PIL import Image

from mhp_keras.config.defaults import base_config
from mhp_keras.errors import ConfigError
from mhp_keras.studies import ablation, class_table
from mhp_keras.training import history
from mhp_keras.training.diagnostics import MechanismDiagnostics


def mvtec_root(tmp_path):
    for category in ("carpet", "grid"):
        folder = tmp_path / category / "train" / "good"
        folder.mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(folder / "000.png")
    (tmp_path / "not_a_category").mkdir()
    return str(tmp_path)


def mvtec_config(root, category="carpet", classes=""):
    config = base_config()
    config.data.name, config.data.root, config.data.category = "mvtec", root, category
    config.data.normal_class = "good"
    config.eval.classes = classes
    return config


def test_mvtec_studies_take_the_category_by_default_and_the_listed_ones(tmp_path):
    root = mvtec_root(tmp_path)
    assert ablation.class_names(mvtec_config(root)) == ["carpet"]
    assert ablation.class_names(mvtec_config(root, classes="grid, carpet")) == ["grid", "carpet"]
    ablation.check_source(mvtec_config(root), "ablation")  # no longer refused


@pytest.mark.parametrize(
    "category, classes, named",
    [("carpet", "grid,wood", "eval.classes"), ("wood", "", "data.category")],
)
def test_unknown_mvtec_categories_are_named_with_the_ones_found(tmp_path, category, classes, named):
    with pytest.raises(ConfigError) as error:
        ablation.class_names(mvtec_config(mvtec_root(tmp_path), category, classes))
    message = str(error.value)
    assert named in message and "['wood']" in message and "['carpet', 'grid']" in message


def test_an_mvtec_run_sets_its_category_and_keeps_the_normal_class_good(tmp_path):
    config = mvtec_config(mvtec_root(tmp_path))
    (run,) = ablation.grid([ablation.parse_variant("conad-2")], ["grid"], 1, "w")
    made = run.config(config)
    assert (made.data.category, made.data.normal_class) == ("grid", "good")
    assert run.workdir == os.path.join("w", "conad-2", "class_grid", "seed_0")


def write_history(folder, rows):
    columns = list(rows[0])
    lines = [",".join(columns)] + [",".join(str(r[c]) for c in columns) for r in rows]
    (folder / "history.csv").write_text("\n".join(lines) + "\n")


def test_history_gives_the_last_epochs_diagnostics_and_every_epochs_time(tmp_path):
    write_history(
        tmp_path,
        [
            dict(
                epoch=0,
                loss=1.0,
                epoch_seconds=2.5,
                adv_grad_share=0.1,
                head_diversity=0.5,
                sharpness=0.2,
                win_0=0.5,
                win_1=0.5,
            ),
            dict(
                epoch=1,
                loss="nan",
                epoch_seconds=3.0,
                adv_grad_share=0.3,
                head_diversity=0.7,
                sharpness=0.4,
                win_0=0.75,
                win_1=0.25,
            ),
        ],
    )
    rows = history.history_rows(str(tmp_path))
    assert rows[1]["loss"] is None  # not finite: no number
    assert history.all_epochs_seconds(rows) == pytest.approx(5.5)
    # Even with no callback history (a finished run resumed: no epoch trained in this process).
    assert history.mechanism([MechanismDiagnostics([[[[0.0]]]])], rows) == {
        "adv_grad_share": 0.3,
        "head_diversity": 0.7,
        "sharpness": 0.4,
        # From the last epoch's winner shares, so runs logged before it existed have it too.
        "effective_heads": pytest.approx(1 / (0.75**0.75 * 0.25**0.25)),
        "epochs_measured": 2,
    }


def test_history_keeps_only_the_epochs_before_the_resumed_one(tmp_path):
    rows = [dict(epoch=e, loss=1.0 - e / 10) for e in range(5)]
    write_history(tmp_path, rows)
    text = (tmp_path / "history.csv").read_text()
    # Resuming after epoch 5 trains nothing again: the file is untouched.
    assert history.keep_epochs_before(str(tmp_path), 5) == 0
    assert (tmp_path / "history.csv").read_text() == text
    # The backup holds 2 epochs: epochs 2.. (0-based) are trained again, their rows go.
    assert history.keep_epochs_before(str(tmp_path), 2) == 3
    assert [r["epoch"] for r in history.history_rows(str(tmp_path))] == [0, 1]
    assert (tmp_path / "history.csv").read_text() == "".join(text.splitlines(True)[:3])
    # No backup (records without checkpoints): no row is left, and the file goes, so that the
    # logger writes its own header.
    assert history.keep_epochs_before(str(tmp_path), 0) == 2
    assert not (tmp_path / "history.csv").exists()
    assert history.keep_epochs_before(str(tmp_path), 0) == 0  # no file


def test_a_run_restarted_without_its_backup_logs_each_epoch_once(tmp_path, tiny_config):
    import shutil

    from mhp_keras.training.experiment import run

    config = tiny_config(**{"train.epochs": 2, "train.jit_compile": "false"})
    run(config, str(tmp_path), "train")
    shutil.rmtree(tmp_path / "backup")  # as a study's records hold it on another machine
    run(config, str(tmp_path), "train")
    assert [r["epoch"] for r in history.history_rows(str(tmp_path))] == [0, 1]


def test_history_without_epoch_times_or_file(tmp_path):
    write_history(tmp_path, [dict(epoch=0, loss=1.0), dict(epoch=1, loss=0.5)])
    rows = history.history_rows(str(tmp_path))
    assert history.all_epochs_seconds(rows) is None
    assert history.mechanism([], rows) is None
    assert history.history_rows(str(tmp_path / "missing")) == []
    assert history.all_epochs_seconds([]) is None


def test_run_record_keeps_every_epochs_time_and_the_diagnostics():
    metrics = {
        "image_auroc": 0.7,
        "pixel_auroc": float("nan"),
        "timings": {"train_seconds": 12.0, "train_seconds_all_epochs": 300.0},
        "mechanism": {
            "adv_grad_share": 0.2,
            "head_diversity": 0.6,
            "sharpness": 0.1,
            "epochs_measured": 20,
        },
    }
    record = ablation.run_record(metrics, seed=1)
    assert record == {
        "seed": 1,
        "image_auroc": 0.7,
        "pixel_auroc": None,
        "train_seconds": 300.0,
        "adv_grad_share": 0.2,
        "head_diversity": 0.6,
        "sharpness": 0.1,
    }
    # The breakdown by defect size, flattened per third.
    sized = ablation.run_record(
        {
            "image_auroc": 0.7,
            "by_defect_size": [
                {"third": "small", "image_auroc": 0.5, "aupro": float("nan")},
                {"third": "large", "image_auroc": 0.9, "aupro": 0.8},
            ],
        },
        seed=0,
    )
    assert sized == {
        "seed": 0,
        "image_auroc": 0.7,
        "train_seconds": None,
        "image_auroc_small": 0.5,
        "aupro_small": None,
        "image_auroc_large": 0.9,
        "aupro_large": 0.8,
    }
    # Older runs: this process's time, no diagnostics.
    old = ablation.run_record({"image_auroc": 0.6, "timings": {"train_seconds": 12.0}}, seed=0)
    assert old == {"seed": 0, "image_auroc": 0.6, "train_seconds": 12.0}


def test_paired_differences_against_the_first_variant_match_numpy():
    def runs(*values):
        return [{"seed": i, "image_auroc": v} for i, v in enumerate(values)]

    results = {
        "vae": {"a": runs(0.60, 0.64), "b": runs(0.50), "c": runs(0.70)},
        "conad-8": {"a": runs(0.66, 0.70), "b": runs(0.49), "c": []},
        "mhp-8": {"a": [], "b": [], "c": []},
    }
    (row,) = class_table.paired_differences(results)  # mhp-8 shares no class: no row
    diffs = np.array([0.68 - 0.62, 0.49 - 0.50])  # class means, over the classes both have
    assert row["variant"] == "conad-8" and row["reference"] == "vae"
    assert row["classes"] == 2 and row["above"] == 1
    assert row["mean"] == pytest.approx(diffs.mean())
    assert row["std"] == pytest.approx(diffs.std())
    # Seed spread: the std over seeds, averaged over the classes with two or more seeds.
    assert row["seed_spread"] == pytest.approx(np.std([0.66, 0.70]))
    assert row["reference_seed_spread"] == pytest.approx(np.std([0.60, 0.64]))
    lines = class_table.paired_lines(results)
    assert "| conad-8 − vae | 2 | +0.025 | 0.035 | 1 of 2 | 0.020 / 0.020 |" in lines
    assert class_table.paired_differences({"vae": results["vae"]}) == []
    assert class_table.paired_lines({"vae": results["vae"]}) == []


def test_variant_summary_has_the_diagnostics_means():
    def run(seed, auroc, diversity):
        return {
            "seed": seed,
            "image_auroc": auroc,
            "head_diversity": diversity,
            "train_seconds": 1.0,
        }

    # conad-8: a: diversity (0.4 + 0.6) / 2 = 0.5, b: 0.9 -> mean 0.7 ± 0.2.
    results = {"conad-8": {"a": [run(0, 0.7, 0.4), run(1, 0.7, 0.6)], "b": [run(0, 0.5, 0.9)]}}
    lines = class_table.variant_summary(class_table.summarise_variants(results))
    assert "| variant | image_auroc | head_diversity |" in lines
    assert "| conad-8 | 0.600 ± 0.100 | 0.700 ± 0.200 |" in lines
    assert not any("By defect size" in line for line in lines)  # no masks, no size table
    # With the breakdown: a second table, the thirds' means over classes.
    results["conad-8"]["a"][0]["aupro_small"] = 0.2
    results["conad-8"]["b"][0]["aupro_small"] = 0.4
    lines = class_table.variant_summary(class_table.summarise_variants(results))
    assert "| variant | aupro_small |" in lines
    assert "| conad-8 | 0.300 ± 0.100 |" in lines


def write_mvtec_category(root, category, rng):
    """A small MVTec-layout category: 12 flat good images, defects with bright squares."""
    import numpy as np

    def save(path, pixels):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)

    base = root / category
    for i in range(12):
        save(base / "train/good" / f"{i:03d}.png", rng.integers(90, 110, (24, 24, 3), np.uint8))
    for i in range(3):
        save(base / "test/good" / f"{i:03d}.png", rng.integers(90, 110, (24, 24, 3), np.uint8))
        image = rng.integers(90, 110, (24, 24, 3), np.uint8)
        mask = np.zeros((24, 24), np.uint8)
        image[4 : 10 + i, 6:12], mask[4 : 10 + i, 6:12] = 250, 255
        save(base / "test/hole" / f"{i:03d}.png", image)
        save(base / "ground_truth/hole" / f"{i:03d}_mask.png", mask)


@pytest.mark.slow
def test_mvtec_ablation_gives_pixel_metrics_and_diagnostics_per_variant(tmp_path):
    import json

    import numpy as np
    from cli_helpers import run, tiny_flags, train_main_command

    rng = np.random.default_rng(0)
    write_mvtec_category(tmp_path / "data", "plate", rng)
    command = train_main_command(
        "--mode=ablation",
        "--config=configs/mvtec.py",
        f"--config.data.root={tmp_path / 'data'}",
        "--config.data.category=plate",
        "--config.data.image_size=16",
        "--config.data.crop=none",
        "--config.eval.variants=vae,conad-2",
        f"--workdir={tmp_path / 'run'}",
        *tiny_flags(epochs=1),
    )
    first = run(command)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "ablation: 2/2 runs done (0 reused)" in first.stdout
    markdown = (tmp_path / "run" / "ablation.md").read_text()
    assert "| plate |" in markdown
    assert "| variant | image_auroc | image_ap | pixel_auroc | aupro |" in markdown.replace(
        " adv_grad_share | head_diversity | sharpness |", ""
    )
    runs = json.loads((tmp_path / "run" / "ablation.json").read_text())["runs"]
    conad = runs["conad-2"]["plate"][0]
    assert conad["train_seconds"] > 0 and conad["sharpness"] > 0
    assert 0.0 <= conad["pixel_auroc"] <= 1.0
    # Three holes of 36, 42 and 48 px: one per third of the defects' areas.
    assert {"aupro_small", "aupro_medium", "aupro_large"} <= set(conad)
    assert "| variant | image_auroc_small | image_auroc_medium |" in markdown
    again = run(command)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "ablation: 2/2 runs done (2 reused)" in again.stdout

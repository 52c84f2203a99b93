"""`--mode=ablation`: the paper's variants x classes x seeds in one command, resumable after a kill.

Variant names and the settings they stand for; the table arithmetic against numbers worked by
hand; the Markdown, CSV, JSON and PNG outputs on made-up metrics; the progress line; and three
subprocess runs: digits twice (the second must reuse every run, train nothing and write the same
tables) and a class-folder dataset written by the test, through configs/cifar10_folders.py.
"""

import csv
import fnmatch
import io
import json
import os
import shutil

import numpy as np
import pytest
from cli_helpers import ROOT, run, tiny_flags, train_main_command
from PIL import Image

from mhp_keras.config.defaults import base_config
from mhp_keras.errors import ConfigError
from mhp_keras.studies import ablation, class_table

# -- variant names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,name,hypotheses,adv_weight",
    [
        ("vae", "vae", 1, 0.0),
        ("VAE-GAN", "vae-gan", 1, 0.1),
        ("Mhp-Wta-8", "mhp-wta-8", 8, 0.0),
        ("MHP-8", "mhp-8", 8, 0.0),
        (" conad-2 ", "conad-2", 2, 0.1),
        ("CONAD-016", "conad-16", 16, 0.1),
        ("MDN-8", "mdn-8", 8, 0.0),
        ("MDN+ConAD-4", "mdn+conad-4", 4, 0.1),
    ],
)
def test_variant_names_set_hypotheses_and_adversarial_weight(text, name, hypotheses, adv_weight):
    config = base_config()
    variant = ablation.parse_variant(text)
    applied = variant.apply(config)
    assert variant.name == name
    assert applied.model.hypotheses == hypotheses
    assert applied.loss.adv_weight == pytest.approx(adv_weight)
    assert config.model.hypotheses == 4 and config.loss.adv_weight == pytest.approx(0.1)


def test_adversarial_variants_take_the_configs_weight():
    config = base_config()
    config.loss.adv_weight = 0.3
    config.eval.variants = "vae-gan,conad-4,mhp-wta-4"
    weights = [v.apply(config).loss.adv_weight for v in ablation.parse_variants(config)]
    assert weights == pytest.approx([0.3, 0.3, 0.0])


def test_no_variants_means_the_papers_seven_at_the_configs_hypotheses():
    config = base_config()
    config.model.hypotheses = 8
    names = [v.name for v in ablation.parse_variants(config)]
    assert names == [
        "vae", "vae-gan", "mdn-8", "mhp-8", "mhp-wta-8", "conad-8", "mdn+conad-8"
    ]  # fmt: skip


@pytest.mark.parametrize(
    "text, mixture",
    [("mdn-8", "mdn"), ("mdn+conad-8", "mdn"), ("conad-8", "wta"), ("vae", "wta")],
)
def test_mdn_variants_mix_and_the_others_compete(text, mixture):
    config = base_config()
    config.loss.mixture = "mdn"  # a variant states its own mixture whatever the config says
    assert ablation.parse_variant(text).apply(config).loss.mixture == mixture


@pytest.mark.parametrize(
    "text, eps", [("mhp-8", 0.05), ("mhp-wta-8", 0.0), ("conad-8", 0.0), ("conad-2", 0.0)]
)
def test_mhp_is_the_relaxed_wta_and_mhp_wta_and_conad_the_hard_one(text, eps):
    # The paper's names: MHP (Rupprecht et al.) relaxes the WTA by eps, MHP-WTA has eps = 0, and
    # ConAD's eq. (2) gives the NLL to the best hypothesis only, whatever the config's eps.
    assert ablation.parse_variant(text).apply(base_config()).loss.eps == pytest.approx(eps)


def test_the_relaxed_variant_needs_a_positive_eps():
    config = base_config()
    config.eval.variants = "mhp-4"
    config.loss.eps = 0.0
    with pytest.raises(ConfigError, match="loss.eps=0.0: set it > 0"):
        ablation.parse_variants(config)


@pytest.mark.parametrize(
    "variants,expected",
    [
        ("vae,gan", "'gan'"),
        ("conad", "'conad'"),
        ("conad-x", "'conad-x'"),
        ("vae;conad-8", "'vae;conad-8'"),
    ],
)
def test_unknown_variant_names_list_the_valid_patterns(variants, expected):
    config = base_config()
    config.eval.variants = variants
    with pytest.raises(ConfigError) as error:
        ablation.parse_variants(config)
    assert expected in str(error.value)
    assert "vae, vae-gan, mdn-H, mhp-H, mhp-wta-H, conad-H, mdn+conad-H" in str(error.value)


@pytest.mark.parametrize(
    "variants,adv_weight,expected",
    [
        ("mhp-wta-1", 0.1, "with one hypothesis that model is 'vae'"),
        ("vae,VAE", 0.1, "names ['vae'] twice"),
        ("vae,conad-8", 0.0, "loss.adv_weight=0.0: set it > 0"),
    ],
)
def test_contradictory_variants_are_refused(variants, adv_weight, expected):
    config = base_config()
    config.eval.variants = variants
    config.loss.adv_weight = adv_weight
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        ablation.parse_variants(config)


def test_runs_share_seeds_across_variants_and_keep_their_own_names():
    config = base_config()
    config.seed = 10
    runs = ablation.grid(
        [ablation.parse_variant("vae"), ablation.parse_variant("conad-2")], ["a", "b"], 2, "w"
    )
    # Seed by seed, class by class, variants innermost: one seed is a full paired table.
    assert [r.name for r in runs[:3]] == [
        "vae/class_a/seed_0",
        "conad-2/class_a/seed_0",
        "vae/class_b/seed_0",
    ]
    assert runs[-1].workdir == os.path.join("w", "conad-2", "class_b", "seed_1")
    configs = [r.config(config) for r in runs if r.class_name == "b" and r.seed == 1]
    assert [c.seed for c in configs] == [11, 11]
    assert [c.data.normal_class for c in configs] == ["b", "b"]
    # The stored config names only its own run, so that adding variants later reuses runs.
    assert [(c.eval.variants, c.eval.classes) for c in configs] == [("vae", "b"), ("conad-2", "b")]
    (as_given,) = ablation.grid([ablation.AS_GIVEN], ["a"], 1, "w")
    assert as_given.workdir == os.path.join("w", "class_a", "seed_0")
    assert as_given.config(config).model.hypotheses == config.model.hypotheses


# -- the tables -----------------------------------------------------------------------------------


def fake_results():
    """Two variants x two classes x two seeds, worked by hand (population std):
    vae a: 0.8, 0.6 -> 0.700 ± 0.100; b: 1.0, 0.9 -> 0.950 ± 0.050; mean 0.825 ± 0.125.
    conad-2 a: 0.9, 0.7 -> 0.800 ± 0.100; b: 0.6, 0.6 -> 0.600 ± 0.000; mean 0.700 ± 0.100."""

    def runs(*aurocs, pixel=None):
        return [
            {"seed": s, "image_auroc": a, "train_seconds": 10.0 * (s + 1)}
            | ({"pixel_auroc": pixel} if pixel is not None else {})
            for s, a in enumerate(aurocs)
        ]

    return {
        "vae": {"a": runs(0.8, 0.6), "b": runs(1.0, 0.9)},
        "conad-2": {"a": runs(0.9, 0.7, pixel=0.75), "b": runs(0.6, 0.6)},
    }


def test_table_means_and_stds_over_seeds_and_classes():
    table = class_table.summarise_variants(fake_results())
    cells = {
        (v, r["class"]): (r["image_auroc_mean"], r["image_auroc_std"])
        for v, rows in table.items()
        for r in rows
    }
    expected = {
        ("vae", "a"): (0.7, 0.1),
        ("vae", "b"): (0.95, 0.05),
        ("vae", "mean"): (0.825, 0.125),
        ("conad-2", "a"): (0.8, 0.1),
        ("conad-2", "b"): (0.6, 0.0),
        ("conad-2", "mean"): (0.7, 0.1),
    }
    assert cells.keys() == expected.keys()
    for key, value in expected.items():
        assert cells[key] == pytest.approx(value), key


def test_undefined_aurocs_are_left_out_of_the_means():
    rows = class_table.summarise(
        {"a": [{"image_auroc": 0.8}, {"image_auroc": None}, {"image_auroc": float("nan")}]}
    )
    assert rows[0]["image_auroc_mean"] == pytest.approx(0.8) and rows[0]["seeds"] == 3


def test_markdown_csv_json_and_png(tmp_path):
    results = fake_results()
    paths = class_table.write_ablation_tables(str(tmp_path), results, seeds=2)
    assert sorted(os.listdir(tmp_path)) == [
        "ablation.csv",
        "ablation.json",
        "ablation.md",
        "ablation.png",
    ]
    markdown = (tmp_path / "ablation.md").read_text()
    assert "| class | vae | conad-2 |" in markdown
    assert "| a | 0.700 ± 0.100 | 0.800 ± 0.100 |" in markdown
    assert "| b | 0.950 ± 0.050 | 0.600 ± 0.000 |" in markdown
    assert "| **mean** | 0.825 ± 0.125 | 0.700 ± 0.100 |" in markdown
    assert "| train time / run | 15 s | 15 s |" in markdown and "8 of 8 runs" in markdown
    # Per variant: every metric some run has, the mean over classes of the class means.
    assert "| variant | image_auroc | pixel_auroc |" in markdown
    assert "| vae | 0.825 ± 0.125 | – |" in markdown
    assert "| conad-2 | 0.700 ± 0.100 | 0.750 ± 0.000 |" in markdown

    lines = list(csv.DictReader(io.StringIO((tmp_path / "ablation.csv").read_text())))
    assert [(r["variant"], r["class"]) for r in lines] == [
        ("vae", "a"),
        ("vae", "b"),
        ("vae", "mean"),
        ("conad-2", "a"),
        ("conad-2", "b"),
        ("conad-2", "mean"),
    ]
    assert float(lines[2]["image_auroc_mean"]) == pytest.approx(0.825)
    assert float(lines[2]["image_auroc_std"]) == pytest.approx(0.125)

    payload = json.loads((tmp_path / "ablation.json").read_text())
    assert payload["variants"] == ["vae", "conad-2"] and payload["classes"] == ["a", "b"]
    assert (payload["runs_done"], payload["runs_total"], payload["seeds"]) == (8, 8, 2)
    assert payload["runs"] == results  # every run's metrics, pixel metrics where present
    assert payload["table"]["conad-2"][0]["pixel_auroc_mean"] == pytest.approx(0.75)
    assert payload["table"]["vae"][-1]["image_auroc_mean"] == pytest.approx(0.825)

    with Image.open(paths["png"]) as image:
        assert image.format == "PNG" and image.width > 400 and image.height > 300
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 10  # bars were drawn, not a blank canvas


def test_tables_written_mid_way_say_which_cells_are_incomplete(tmp_path):
    results = fake_results()
    results["conad-2"]["b"] = results["conad-2"]["b"][:1]
    results["vae"]["b"] = []
    class_table.write_ablation_tables(str(tmp_path), results, seeds=2)
    markdown = (tmp_path / "ablation.md").read_text()
    assert "| b | – | 0.600 ± 0.000 (1/2 seeds) |" in markdown
    assert "| **mean** | 0.700 ± 0.000 (partial) | 0.700 ± 0.100 (partial) |" in markdown
    assert "5 of 8 runs" in markdown
    assert (tmp_path / "ablation.png").stat().st_size > 0


def test_class_table_keeps_its_files(tmp_path):
    paths = class_table.write_class_tables(str(tmp_path), fake_results()["vae"])
    assert sorted(os.path.basename(paths[k]) for k in ("csv", "markdown", "json")) == [
        "classes.csv",
        "classes.json",
        "classes.md",
    ]
    assert "| **mean** | 0.825 ± 0.125 |" in (tmp_path / "classes.md").read_text()


# -- resume and progress --------------------------------------------------------------------------


def test_stored_metrics_are_reused_only_for_the_same_config(tmp_path):
    assert ablation.stored_metrics(str(tmp_path), {"seed": 0}) is None
    (tmp_path / "metrics.json").write_text(json.dumps({"image_auroc": 0.7, "config": {"seed": 0}}))
    assert ablation.stored_metrics(str(tmp_path), {"seed": 0})["image_auroc"] == 0.7
    assert ablation.stored_metrics(str(tmp_path), {"seed": 1}) is None
    (tmp_path / "metrics.json").write_text('{"image_auroc": 0.7, "con')
    assert ablation.stored_metrics(str(tmp_path), {"seed": 0}) is None


def test_a_run_is_reused_after_its_data_moved_but_not_after_its_data_changed(tmp_path):
    stored = {"seed": 0, "data": {"root": "/old/cifar", "image_size": 32}}
    (tmp_path / "metrics.json").write_text(json.dumps({"image_auroc": 0.7, "config": stored}))
    moved = {"seed": 0, "data": {"root": "../data/cifar", "image_size": 32}}
    assert ablation.stored_metrics(str(tmp_path), moved)["image_auroc"] == 0.7
    resized = {"seed": 0, "data": {"root": "/old/cifar", "image_size": 64}}
    assert ablation.stored_metrics(str(tmp_path), resized) is None


def test_a_run_saved_under_the_old_mhp_wta_meaning_is_not_reused(tmp_path):
    # Before the paper's names, mhp-wta-H trained with the config's eps (0.05): that is mhp-H now.
    from mhp_keras.training.experiment import config_dict

    config = base_config()
    old = config_dict(ablation.parse_variant("mhp-8").apply(config))  # eps 0.05, as saved then
    (tmp_path / "metrics.json").write_text(json.dumps({"image_auroc": 0.7, "config": old}))
    new = config_dict(ablation.parse_variant("mhp-wta-8").apply(config))
    assert ablation.stored_metrics(str(tmp_path), new) is None
    assert ablation.stored_metrics(str(tmp_path), old)["image_auroc"] == 0.7


def test_progress_line_and_eta():
    # 53 runs left at 81 s each: 4293 s, 71.6 min.
    line = ablation.progress_line(
        "ablation", 7, 60, 3, "conad-8/class_cat/seed_1", 0.6812, 95.2, 81.0
    )
    assert line == (
        "ablation: 7/60 runs done (3 reused), last conad-8/class_cat/seed_1 AUROC 0.681 in 95 s; "
        "ETA 1 h 12 min"
    )
    reused = ablation.progress_line("ablation", 1, 4, 1, "vae/class_0/seed_0", None, None, None)
    assert reused.endswith("AUROC n/a reused; ETA unknown (nothing trained yet)")
    assert ablation.progress_line("x", 4, 4, 0, "r", 0.5, 30, 30).endswith("in 30 s; all done")
    assert [ablation.format_duration(s) for s in (0, 99.4, 725, 3600)] == [
        "0 s",
        "99 s",
        "12 min",
        "1 h 0 min",
    ]


# -- end to end -----------------------------------------------------------------------------------


def user_error(result) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stderr.strip().splitlines()[-1]


def test_unknown_variant_on_the_command_line(tmp_path):
    result = run(
        train_main_command(
            "--mode=ablation", f"--workdir={tmp_path}", "--config.eval.variants=vae,gan"
        ),
        timeout=120,
    )
    message = user_error(result)
    assert message.startswith("error: eval.variants names an unknown variant 'gan'")
    assert "vae, vae-gan, mdn-H, mhp-H, mhp-wta-H, conad-H, mdn+conad-H" in message


def test_a_single_normal_folder_is_refused(tmp_path):
    result = run(
        train_main_command(
            "--mode=ablation",
            "--config=configs/good_images.py",
            f"--config.data.normal_dir={tmp_path}",
            f"--workdir={tmp_path / 'run'}",
        ),
        timeout=120,
    )
    assert "holds one normal class" in user_error(result)


def files_under(folder) -> dict:
    return {
        os.path.relpath(os.path.join(d, n), folder): os.stat(os.path.join(d, n)).st_mtime_ns
        for d, _, names in os.walk(folder)
        for n in names
    }


@pytest.mark.slow
def test_digits_ablation_then_resume_reuses_every_run(tmp_path):
    command = train_main_command(
        "--mode=ablation",
        "--seeds=1",
        f"--workdir={tmp_path}",
        "--config.eval.classes=0,7",
        "--config.eval.variants=VAE,conad-2",
        *tiny_flags(epochs=1, max_train=48),
    )
    first = run(command)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "ablation: 4/4 runs done (0 reused)" in first.stdout
    assert "RESULT ablation image AUROC" in first.stdout
    for variant in ("vae", "conad-2"):
        for name in ("0", "7"):
            assert (tmp_path / variant / f"class_{name}" / "seed_0" / "metrics.json").exists()
    tables = {n: (tmp_path / n).read_bytes() for n in sorted(os.listdir(tmp_path)) if "." in n}
    assert sorted(tables) == ["ablation.csv", "ablation.json", "ablation.md", "ablation.png"]
    runs = json.loads(tables["ablation.json"])["runs"]
    assert runs["vae"]["0"][0]["train_seconds"] > 0
    stored = json.loads((tmp_path / "conad-2/class_7/seed_0/metrics.json").read_text())["config"]
    assert (stored["model"]["hypotheses"], stored["loss"]["adv_weight"]) == (2, 0.1)
    run_files = {k: v for k, v in files_under(tmp_path).items() if k not in tables}

    again = run(command)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "ablation: 4/4 runs done (4 reused)" in again.stdout
    progress = [line for line in again.stdout.splitlines() if line.startswith("ablation:")]
    assert len(progress) == 4 and all(" reused; " in line for line in progress)  # none trained
    assert {k: v for k, v in files_under(tmp_path).items() if k not in tables} == run_files
    assert {n: (tmp_path / n).read_bytes() for n in tables} == tables

    # What git keeps of a study under results/ (its .gitignore's whitelist, without checkpoints,
    # models or scores) is enough for another machine to reuse every run.
    with open(os.path.join(ROOT, "results", ".gitignore"), encoding="utf-8") as f:
        kept = [line[1:].strip() for line in f if line.startswith("!") and "/" not in line]
    clone = tmp_path.parent / "records_only"
    for relative in files_under(tmp_path):
        if any(fnmatch.fnmatch(os.path.basename(relative), pattern) for pattern in kept):
            (clone / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(tmp_path / relative, clone / relative)
    assert not (clone / "vae" / "class_0" / "seed_0" / "model.keras").exists()
    elsewhere = run([f"--workdir={clone}" if a.startswith("--workdir=") else a for a in command])
    assert elsewhere.returncode == 0, elsewhere.stderr[-3000:]
    assert "ablation: 4/4 runs done (4 reused)" in elsewhere.stdout
    assert (clone / "ablation.md").read_bytes() == tables["ablation.md"]


@pytest.mark.slow
def test_class_folders_through_the_cifar10_folders_config(tmp_path):
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    # Bright cats, dark dogs; "odd" has test images only, so it cannot be the normal class.
    for split, count in (("train", 10), ("test", 4)):
        for name, level in (("cat", 180), ("dog", 60), ("odd", 120)):
            if name == "odd" and split == "train":
                continue
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(level + rng.normal(0, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    workdir = tmp_path / "run"
    result = run(
        train_main_command(
            "--mode=ablation",
            "--config=configs/cifar10_folders.py",
            f"--config.data.root={root}",
            f"--workdir={workdir}",
            "--config.eval.variants=vae",
            "--config.data.image_size=16",
            "--config.data.batch_size=8",
            *tiny_flags(epochs=1),
        )
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ablation: 2/2 runs done (0 reused)" in result.stdout
    payload = json.loads((workdir / "ablation.json").read_text())
    assert payload["classes"] == ["cat", "dog"] and payload["variants"] == ["vae"]
    stored = json.loads((workdir / "vae/class_dog/seed_0/metrics.json").read_text())
    assert stored["n_test"] == 12 and stored["normal_class"] == "dog"
    assert "| dog |" in (workdir / "ablation.md").read_text()

"""Report figures are written as valid PNGs for 1/3 channels and K 1/3, and share one heat scale."""

import numpy as np
import pytest
from PIL import Image

from mhp_keras.scoring import reports


def _inputs(n=3, k=1, c=1, size=8, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.array([i % 2 for i in range(n)])
    maps = rng.random((n, size, size)) + 2.0 * labels[:, None, None]
    masks = (rng.random((n, size, size)) > 0.8).astype(np.uint8) * labels[:, None, None]
    return {
        "labels": labels,
        "scores": maps.mean(axis=(1, 2)),
        "threshold": 1.0,
        "images": rng.random((n, size, size, c)),
        "best": rng.random((n, size, size, c)),
        "hypotheses": rng.random((n, k, size, size, c)),
        "maps": maps,
        "ids": [f"img_{i}" for i in range(n)],
        "masks": masks,
    }


def _assert_png(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()


@pytest.mark.parametrize(("c", "k", "with_masks"), [(1, 1, True), (3, 3, False), (3, 1, True)])
def test_write_report_writes_valid_pngs(tmp_path, c, k, with_masks):
    inputs = _inputs(k=k, c=c)
    if not with_masks:
        inputs["masks"] = None
    labels, scores, threshold = inputs.pop("labels"), inputs.pop("scores"), inputs.pop("threshold")
    examples = dict(inputs, labels=labels, scores=scores)
    written = reports.write_report(
        str(tmp_path / "report"),
        labels=labels,
        scores=scores,
        threshold=threshold,
        examples=examples,
        norm=reports.heatmap_scale(inputs["maps"], labels, threshold=threshold),
    )
    assert [p.rsplit("/", 1)[-1] for p in written] == ["roc.png", "histogram.png", "examples.png"]
    for path in written:
        _assert_png(path)


def test_single_class_and_infinite_threshold_still_plot(tmp_path):
    inputs = _inputs(n=3)
    inputs["labels"] = np.zeros(3, dtype=int)
    _assert_png(reports.plot_roc(str(tmp_path / "roc.png"), inputs["labels"], inputs["scores"]))
    path = reports.plot_score_histogram(
        str(tmp_path / "h.png"), inputs["labels"], inputs["scores"], float("inf")
    )
    _assert_png(path)


def test_plot_examples_with_more_images_than_rows(tmp_path):
    inputs = _inputs(n=10, k=2, c=3)
    inputs.pop("labels"), inputs.pop("scores"), inputs.pop("threshold"), inputs.pop("ids")
    maps = inputs.pop("maps")
    path = reports.plot_examples(
        str(tmp_path / "examples.png"),
        inputs["images"],
        inputs["best"],
        inputs["hypotheses"],
        maps[..., None],  # a trailing channel axis is accepted too
        maps.mean(axis=(1, 2)),
        np.arange(10) % 2,
        [b"bytes_id"] * 10,
        0.5,
        masks=inputs["masks"][..., None],
        n=4,
        norm=reports.heatmap_scale(maps, threshold=1.5 * 64, aggregate="sum"),
    )
    _assert_png(path)


def test_select_examples_takes_top_and_bottom():
    scores = np.array([0.5, 0.9, 0.1, 0.7, 0.3, 0.2])
    # Top 2 (0.9, 0.7) then bottom 2 (0.2, 0.1), in descending order of score.
    assert reports.select_examples(scores, 4).tolist() == [1, 3, 5, 2]
    assert reports.select_examples(scores, 3).tolist() == [1, 3, 2]
    assert reports.select_examples(scores[:2], 8).tolist() == [1, 0]


def test_heatmap_scale_is_shared_by_every_image():
    # Image 0 is a faint normal map in [0, 0.1]; image 1 an anomalous one reaching 10. Per-image
    # min-max would paint image 0's maximum 0.1 as hot as image 1's 10.
    maps = np.zeros((2, 4, 4))
    maps[0] = np.linspace(0.0, 0.1, 16).reshape(4, 4)
    maps[1] = np.linspace(0.0, 10.0, 16).reshape(4, 4)
    maps[1, 0, 0] = 0.1  # the same value as image 0's hottest pixel
    norm = reports.heatmap_norm(maps, labels=[0, 1])
    colours = reports.heatmap_rgb(maps, norm)
    np.testing.assert_allclose(colours[0, 3, 3], colours[1, 0, 0])
    # One image at a time through the same norm gives the same colours: nothing is per image.
    np.testing.assert_allclose(reports.heatmap_rgb(maps[0], norm), colours[0])
    # The faint normal map stays near the cold end of the scale; the anomalous peak is at the top.
    assert norm(0.1) < 0.05
    assert norm(maps[1].max()) > 0.95


def test_heatmap_norm_pixel_threshold_is_the_midpoint():
    maps = np.random.default_rng(0).random((3, 5, 5))
    norm = reports.heatmap_norm(maps, pixel_threshold=0.3)
    assert float(norm(0.3)) == pytest.approx(0.5)
    # Even a threshold outside the map range keeps a valid scale with the threshold in the middle.
    norm = reports.heatmap_norm(maps, pixel_threshold=5.0)
    assert float(norm(5.0)) == pytest.approx(0.5)


def test_heatmap_norm_constant_maps_do_not_divide_by_zero():
    maps = np.full((2, 3, 3), 4.0)
    colours = reports.heatmap_rgb(maps, reports.heatmap_norm(maps))
    assert np.all(np.isfinite(colours))


@pytest.mark.parametrize(
    ("aggregate", "threshold", "anchor"),
    [("sum", 64.0, 1.0), ("mean", 0.7, 0.7), ("topk_sum", 14.0, 2.0), ("topk", 2.0, 2.0)],
)
def test_heatmap_scale_centres_on_the_threshold_pixel_value(aggregate, threshold, anchor):
    # 8 x 8 maps: a sum threshold of 64 is 1 per pixel; topk 0.1 sums ceil(6.4) = 7 pixels.
    maps = np.random.default_rng(1).random((4, 8, 8)) * 3
    norm = reports.heatmap_scale(maps, threshold=threshold, aggregate=aggregate, topk_fraction=0.1)
    assert float(norm(anchor)) == pytest.approx(0.5)
    # Without a threshold (an untrained model: +inf) the scale is the maps' percentiles.
    plain = reports.heatmap_scale(maps, threshold=float("inf"))
    assert plain.vmin == pytest.approx(np.percentile(maps, reports.LOW_PERCENTILE))
    assert plain.vmax == pytest.approx(np.percentile(maps, reports.HIGH_PERCENTILE))


def test_the_examples_show_each_images_head_spread_and_the_runs_diagnostics(tmp_path, monkeypatch):
    saved = {}
    monkeypatch.setattr(reports, "_save", lambda fig, path: saved.setdefault("fig", fig) and path)
    inputs = _inputs(n=2, k=3, c=1)
    line = reports.run_summary_line(
        {"adv_grad_share": 0.0912, "head_diversity": 0.84, "sharpness": 0.2, "epochs_measured": 20},
        {"kept": "best_val", "epoch": 19, "val_recon": -2.0},
    )
    assert line == (
        "adv_grad_share 0.0912, head_diversity 0.84, sharpness 0.2 (last epoch), "
        "weights of epoch 19 (lowest val_recon)"
    )
    reports.plot_examples(
        str(tmp_path / "examples.png"),
        inputs["images"],
        inputs["best"],
        inputs["hypotheses"],
        inputs["maps"],
        inputs["scores"],
        inputs["labels"],
        inputs["ids"],
        inputs["threshold"],
        diversity=[0.5, 1.25],
        run_line=line,
    )
    fig = saved["fig"]
    # The run's line under the title, wrapped to the figure's width.
    assert fig._suptitle.get_text().split("\n", 1)[1].replace("\n", " ") == line
    # Two rows, the higher score first; each best guess says how far that image's heads differ.
    first, second = (0, 1) if inputs["scores"][0] > inputs["scores"][1] else (1, 0)
    rows = _grid(fig)
    assert rows[0][1].get_title() == f"best\nheads differ {[0.5, 1.25][first]:.2f}"
    assert rows[1][1].get_title() == f"heads differ {[0.5, 1.25][second]:.2f}"
    assert reports.run_summary_line(None, {"kept": "last"}) is None
    assert reports.run_summary_line({"effective_heads": 6.9}, None) == (
        "effective_heads 6.9 (last epoch)"
    )
    assert reports.run_summary_line({"sharpness": 0.29, "head_sharpness_max": 16.8}, None) == (
        "sharpness 0.29, head_sharpness_max 16.8 (last epoch)"
    )


def _grid(fig):
    """The example figure's axes as rows of (input, best, h0.., map) cells; the colour bar is
    the last axes."""
    cells = fig.axes[:-1]
    columns = len(cells) // 2
    return [cells[i : i + columns] for i in range(0, len(cells), columns)]

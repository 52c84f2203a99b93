"""The breakdown by defect size: thirds by mask area, each scored against the normal images."""

import numpy as np
import pytest

from mhp_keras.scoring import defect_sizes


def _square_mask(size, side, rng):
    mask = np.zeros([size, size])
    y, x = rng.integers(0, size - side, 2)
    mask[y : y + side, x : x + side] = 1
    return mask


def _set(rng, size=32):
    """4 normal images and 9 anomalous ones, 3 each with defects of 2, 5 and 10 px a side, and
    one anomalous image without a mask (a defect kind without masks)."""
    masks = [np.zeros([size, size]) for _ in range(4)]
    for side in (10, 2, 5) * 3:  # not in size order: the breakdown must sort
        masks.append(_square_mask(size, side, rng))
    masks.append(np.zeros([size, size]))
    labels = np.r_[np.zeros(4, int), np.ones(10, int)]
    return labels, masks


def test_thirds_split_by_area_and_score_each_against_the_normal_images():
    rng = np.random.default_rng(0)
    labels, masks = _set(rng)
    areas = np.array([m.sum() for m in masks]) / masks[0].size
    # A model that finds only the large defects: the maps mark those exactly and are noise
    # elsewhere, and the image score is high for large defects and lowest for small ones.
    large = areas >= 100 / 1024
    maps = [m * 10.0 if big else rng.normal(size=m.shape) for m, big in zip(masks, large)]
    scores = np.where(large, 5.0, np.where(areas > 0, -5.0, 0.0)) + rng.normal(0, 0.1, 14)
    rows = defect_sizes.by_defect_size(labels, scores, masks, maps, pixel_threshold=1.0)

    assert [r["third"] for r in rows] == ["small", "medium", "large"]
    assert [r["n"] for r in rows] == [3, 3, 3]  # the unmasked anomalous image is in none
    assert [(r["area_fraction_min"], r["area_fraction_max"]) for r in rows] == [
        (4 / 1024, 4 / 1024),
        (25 / 1024, 25 / 1024),
        (100 / 1024, 100 / 1024),
    ]
    # Large defects: scored above every normal image, their pixels above every normal pixel.
    assert rows[2]["image_auroc"] == 1.0
    assert rows[2]["pixel_auroc"] == 1.0
    assert rows[2]["aupro"] == pytest.approx(1.0)
    # F1 at threshold 1: every defect pixel (value 10) is found, and the false positives are the
    # normal maps' N(0, 1) pixels >= 1, counted here directly.
    false = sum(int(np.sum(maps[i] >= 1.0)) for i in range(4))
    assert rows[2]["pixel_f1"] == pytest.approx(2 * 300 / (2 * 300 + false))
    # Small defects: scored below every normal image; their maps are noise, so pixel AUROC is
    # near one half.
    assert rows[0]["image_auroc"] == 0.0
    assert abs(rows[0]["pixel_auroc"] - 0.5) < 0.2


def test_areas_count_only_the_region_of_interest():
    mask = np.zeros([4, 4])
    mask[0, :2] = 1
    values = np.zeros([4, 4])
    values[2:] = np.nan  # half the image outside the region
    assert defect_sizes.area_fractions([mask], [values])[0] == pytest.approx(2 / 8)


def test_few_defects_give_fewer_rows_and_none_give_none():
    rng = np.random.default_rng(1)
    labels, masks = _set(rng)
    maps = [rng.normal(size=m.shape) for m in masks]
    scores = rng.normal(size=14)
    keep = [0, 1, 2, 3, 4, 5]  # 4 normal, 2 anomalous
    rows = defect_sizes.by_defect_size(
        labels[keep], scores[keep], [masks[i] for i in keep], [maps[i] for i in keep], 1.0
    )
    assert [(r["third"], r["n"]) for r in rows] == [("small", 1), ("medium", 1)]
    assert defect_sizes.by_defect_size(labels[:4], scores[:4], masks[:4], maps[:4], 1.0) == []

"""Checks every metric against hand-worked tiny cases and against brute-force references."""

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import ndimage

from mhp_keras.scoring import metrics

# labels [0, 0, 1, 1], scores [0.1, 0.4, 0.35, 0.8]:
# - AUROC: positive/negative pairs (0.35>0.1), (0.35<0.4), (0.8>0.1), (0.8>0.4) -> 3/4.
# - AP: descending 0.8(+) 0.4(-) 0.35(+) 0.1(-): recall 0.5 at precision 1, recall 1 at
#   precision 2/3 -> 0.5 * 1 + 0.5 * 2/3 = 5/6.
# - F1 at thresholds 0.8, 0.4, 0.35, 0.1: 2TP/(predicted+positives) = 2/3, 2/4, 4/5, 4/6
#   -> max 0.8 at threshold 0.35.
LABELS = [0, 0, 1, 1]
SCORES = [0.1, 0.4, 0.35, 0.8]


def test_image_metrics_hand_case():
    out = metrics.image_metrics(LABELS, SCORES)
    assert out["image_auroc"] == pytest.approx(0.75)
    assert out["image_ap"] == pytest.approx(5 / 6)
    assert out["f1_max"] == pytest.approx(0.8)
    assert out["f1_threshold"] == pytest.approx(0.35)
    assert metrics.f1_optimal_threshold(LABELS, SCORES) == pytest.approx(0.35)


def test_f1_treats_tied_scores_as_one_threshold():
    # labels [1, 0, 1], scores [0.5, 0.5, 0.2]: threshold 0.5 predicts both tied images -> TP 1 of 2
    # predictions, F1 = 2/(2+2) = 0.5; threshold 0.2 -> TP 2 of 3, F1 = 4/5. (Splitting the tie
    # would wrongly offer F1 = 2/(1+2).) AUROC: pairs (0.5 vs 0.5) = 1/2, (0.2 vs 0.5) = 0 -> 1/4.
    out = metrics.image_metrics([1, 0, 1], [0.5, 0.5, 0.2])
    assert out["f1_max"] == pytest.approx(0.8)
    assert out["f1_threshold"] == pytest.approx(0.2)
    assert out["image_auroc"] == pytest.approx(0.25)


def test_image_metrics_single_class_is_nan():
    normal_only = metrics.image_metrics([0, 0, 0], [0.1, 0.2, 0.3])
    assert all(math.isnan(v) for v in normal_only.values())
    anomalous_only = metrics.image_metrics([1, 1], [0.1, 0.2])
    assert math.isnan(anomalous_only["image_auroc"]) and math.isnan(anomalous_only["image_ap"])
    # Threshold 0.1 flags both anomalous images: F1 = 1.
    assert anomalous_only["f1_max"] == pytest.approx(1.0)
    assert anomalous_only["f1_threshold"] == pytest.approx(0.1)


def test_image_metrics_rejects_bad_input():
    with pytest.raises(ValueError):
        metrics.image_metrics([], [])
    with pytest.raises(ValueError):
        metrics.image_metrics([0, 1], [0.5])


def _pair_count_auroc(labels, scores):
    """P(score_pos > score_neg) + 0.5 P(tie), over every positive/negative pair."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    return (np.sum(diff > 0) + 0.5 * np.sum(diff == 0)) / diff.size


def test_auroc_matches_brute_force_pair_count():
    rng = np.random.default_rng(0)
    for _ in range(5):
        labels = rng.integers(0, 2, 60)
        labels[:2] = [0, 1]
        scores = np.round(rng.normal(size=60) + labels, 1)  # rounding makes ties
        got = metrics.image_metrics(labels, scores)["image_auroc"]
        assert got == pytest.approx(_pair_count_auroc(labels, scores))


def _brute_force_f1(labels, scores):
    """(best F1, the highest threshold reaching it) over every observed score, F1 exact."""
    labels = np.asarray(labels, dtype=bool)
    best = None
    for t in np.unique(scores)[::-1]:  # descending: a later equal F1 does not replace it
        predicted = np.asarray(scores) >= t
        f1 = Fraction(2 * int(np.sum(predicted & labels)), int(predicted.sum() + labels.sum()))
        if best is None or f1 > best[0]:
            best = (f1, float(t))
    return best


@pytest.mark.parametrize("seed", range(8))
def test_f1_threshold_matches_brute_force_search(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 80))
    labels = rng.integers(0, 2, n)
    labels[0] = 1
    # Few distinct scores: many tied scores and many tied F1 values between thresholds.
    scores = rng.integers(0, 6, n) / 4 + 0.5 * labels * rng.random()
    f1, threshold = _brute_force_f1(labels, scores)
    out = metrics.image_metrics(labels, scores)
    assert out["f1_threshold"] == threshold
    assert out["f1_max"] == pytest.approx(float(f1), rel=1e-12)


def test_f1_tie_between_thresholds_keeps_the_highest():
    # labels [1, 0, 0, 1], scores [0.9, 0.5, 0.4, 0.1]: F1 = 2TP/(predicted+positives) is 2/3 at
    # 0.9, 2/4 at 0.5, 2/5 at 0.4 and 4/6 = 2/3 at 0.1: an exact tie, won by the higher 0.9 (as
    # floats from precision and recall, 2PR/(P+R), the two need not be equal).
    out = metrics.image_metrics([1, 0, 0, 1], [0.9, 0.5, 0.4, 0.1])
    assert out["f1_threshold"] == 0.9 and out["f1_max"] == pytest.approx(2 / 3)


def test_classification_at_threshold_hand_case():
    # At 0.35 the predictions are [0, 1, 1, 1]: TP 2, FP 1, FN 0, TN 1.
    out = metrics.classification_at_threshold(LABELS, SCORES, 0.35)
    assert (out["tp"], out["fp"], out["fn"], out["tn"]) == (2, 1, 0, 1)
    assert out["precision"] == pytest.approx(2 / 3)
    assert out["recall"] == pytest.approx(1.0)
    assert out["tpr"] == pytest.approx(1.0)
    assert out["f1"] == pytest.approx(0.8)
    assert out["accuracy"] == pytest.approx(0.75)
    assert out["fpr"] == pytest.approx(0.5)


def test_classification_at_threshold_degenerate():
    # An infinite threshold (no validation set) predicts nothing: precision 0 by convention.
    out = metrics.classification_at_threshold(LABELS, SCORES, float("inf"))
    assert out["precision"] == 0.0 and out["recall"] == 0.0 and out["f1"] == 0.0
    assert out["fpr"] == 0.0 and out["accuracy"] == 0.5
    normal_only = metrics.classification_at_threshold([0, 0], [0.1, 0.9], 0.5)
    assert math.isnan(normal_only["recall"]) and normal_only["fpr"] == pytest.approx(0.5)


def test_threshold_from_normal():
    # 101 evenly spaced scores 0..100: the 0.99 quantile is exactly 99.
    assert metrics.threshold_from_normal(np.arange(101.0), 0.99) == pytest.approx(99.0)
    assert metrics.threshold_from_normal([3.0], 0.5) == 3.0
    with pytest.raises(ValueError, match="at least one"):
        metrics.threshold_from_normal([])
    with pytest.raises(ValueError):
        metrics.threshold_from_normal([1.0, 2.0], 1.5)


def test_score_distribution():
    # 101 evenly spaced scores 0..100: quantiles are the scores themselves; threshold 90 flags
    # 90..100, 11 of 101.
    out = metrics.score_distribution(np.arange(101.0), 90.0)
    assert out == {
        "n": 101,
        "min": 0.0,
        "median": 50.0,
        "p95": 95.0,
        "p99": 99.0,
        "max": 100.0,
        "flagged_fraction": pytest.approx(11 / 101),
    }
    # No validation set (infinite threshold) flags nothing; an empty group is all NaN.
    assert metrics.score_distribution([1.0, 2.0], float("inf"))["flagged_fraction"] == 0.0
    empty = metrics.score_distribution([], 1.0)
    assert empty["n"] == 0 and all(math.isnan(v) for k, v in empty.items() if k != "n")


def test_pixel_auroc_hand_case():
    masks = np.array([[[0, 1], [0, 0]]])
    # The anomalous pixel (0.25) beats 2 of the 3 normal pixels (0.1, 0.2, but not 0.3) -> 2/3.
    maps = np.array([[[0.1, 0.25], [0.2, 0.3]]])
    assert metrics.pixel_auroc(masks, maps) == pytest.approx(2 / 3)
    assert metrics.pixel_auroc(masks[..., None], maps) == pytest.approx(2 / 3)
    assert metrics.pixel_auroc(masks, masks.astype(float)) == pytest.approx(1.0)
    assert math.isnan(metrics.pixel_auroc(np.zeros_like(masks), maps))
    assert math.isnan(metrics.pixel_auroc(np.ones_like(masks), maps))


def _two_region_case():
    """Two 2x3 images: a 2-pixel region in the first, a 1-pixel region in the second."""
    masks = np.zeros((2, 2, 3), dtype=np.uint8)
    masks[0, 0, :2] = 1
    masks[1, 1, 2] = 1
    return masks


def test_aupro_perfect_map_is_one():
    masks = _two_region_case()
    assert metrics.aupro(masks, masks.astype(float)) == pytest.approx(1.0)
    assert metrics.aupro(masks, masks + 0.01 * np.arange(6).reshape(2, 3)) == pytest.approx(1.0)


def test_aupro_one_of_two_regions_found_is_half():
    # Region A (2 px) scores 1, every normal pixel 0.5, region B (1 px) 0. Curve points:
    # (0,0) -> t=1: (FPR 0, PRO 1/2) -> t=0.5: (1, 1/2) -> t=0: (1, 1). PRO is 1/2 on [0, 0.3],
    # so the normalised area is 0.5. Regions count equally: a pixel-weighted overlap would be 2/3.
    masks = _two_region_case()
    maps = np.full(masks.shape, 0.5)
    maps[0, 0, :2] = 1.0
    maps[1, 1, 2] = 0.0
    assert metrics.aupro(masks, maps) == pytest.approx(0.5)
    assert metrics.aupro(masks, maps, fpr_limit=1.0) == pytest.approx(0.5)


def test_aupro_partial_fpr_step():
    # One 1x12 image: a 2-pixel region scoring 0.9 and 0.5; 10 normal pixels, one at 0.7 and nine
    # at 0.1. Points: (0,0), t=0.9 (0, 0.5), t=0.7 (0.1, 0.5), t=0.5 (0.1, 1), t=0.1 (1, 1).
    # Area on [0, 0.3] = 0.1 * 0.5 + 0.2 * 1 = 0.25 -> 0.25 / 0.3 = 5/6.
    masks = np.zeros((1, 1, 12), dtype=np.uint8)
    masks[0, 0, :2] = 1
    maps = np.full(masks.shape, 0.1)
    maps[0, 0, :3] = [0.9, 0.5, 0.7]
    assert metrics.aupro(masks, maps) == pytest.approx(5 / 6)


def test_aupro_ties_and_interpolation_at_the_limit():
    # One 1x6 image, mask [0,1,1,0,0,0], map [0.9,0.9,0.1,0.1,0.1,0.1]. t=0.9 adds one of 4 normal
    # pixels and half the region at once: points (0,0) -> (0.25, 0.5) -> (1, 1), straight lines.
    # Area on [0, 0.25] = 0.25 * 0.5 / 2 = 0.0625. At FPR 0.3 the second segment is at
    # 0.5 + 0.5 * 0.05 / 0.75 = 0.5333..., so [0.25, 0.3] adds 0.05 * (0.5 + 0.5333) / 2 = 0.025833.
    # Total 0.0883333 / 0.3 = 0.294444...
    masks = np.array([[[0, 1, 1, 0, 0, 0]]])
    maps = np.array([[[0.9, 0.9, 0.1, 0.1, 0.1, 0.1]]])
    expected = (0.0625 + 0.05 * (0.5 + 0.5 + 0.5 * 0.05 / 0.75) / 2) / 0.3
    assert metrics.aupro(masks, maps) == pytest.approx(expected)
    assert expected == pytest.approx(0.294444, abs=1e-6)


def test_aupro_regions_are_8_connected():
    # Pixels a=(0,0) and b=(1,1) touch diagonally: one region {a, b}; c=(3,3) is a second region.
    # a and c score 1, the normal pixels 0.5, b 0. At t=1: PRO = (1/2 + 1) / 2 = 0.75 at FPR 0,
    # flat until FPR 1, so AUPRO = 0.75 (4-connectivity would give (1 + 0 + 1) / 3).
    masks = np.zeros((1, 4, 4), dtype=np.uint8)
    masks[0, 0, 0] = masks[0, 1, 1] = masks[0, 3, 3] = 1
    maps = np.full(masks.shape, 0.5)
    maps[0, 0, 0] = maps[0, 3, 3] = 1.0
    maps[0, 1, 1] = 0.0
    assert metrics.aupro(masks, maps) == pytest.approx(0.75)


def test_aupro_undefined_is_nan():
    maps = np.random.default_rng(0).random((2, 4, 4))
    assert math.isnan(metrics.aupro(np.zeros((2, 4, 4)), maps))
    assert math.isnan(metrics.aupro(np.ones((2, 4, 4)), maps))


def _random_masks(rng, n, size, p=0.08):
    """Blobby masks: smoothed noise above a level, so regions have several pixels."""
    noise = ndimage.uniform_filter(rng.random((n, size, size)), size=(1, 3, 3))
    return (noise > np.quantile(noise, 1 - p)).astype(np.uint8)


def _brute_force_pro_curve(masks, maps):
    """One threshold at a time, with explicit loops over regions."""
    regions = []
    for mask, m in zip(masks, maps, strict=True):
        labelled, count = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [m[labelled == r] for r in range(1, count + 1)]
    normal = maps[masks == 0]
    fpr, pro = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        fpr.append(np.mean(normal >= t))
        pro.append(np.mean([np.mean(r >= t) for r in regions]))
    return np.array(fpr), np.array(pro)


def test_pro_curve_matches_brute_force():
    rng = np.random.default_rng(1)
    masks = _random_masks(rng, 3, 12)
    maps = np.round(rng.random(masks.shape) + 0.5 * masks, 2)  # rounding makes ties
    fpr, pro = metrics.pro_curve(masks, maps)
    ref_fpr, ref_pro = _brute_force_pro_curve(masks, maps)
    np.testing.assert_allclose(fpr, ref_fpr, atol=1e-12)
    np.testing.assert_allclose(pro, ref_pro, atol=1e-12)


def test_aupro_threshold_grid_approximates_exact():
    rng = np.random.default_rng(2)
    masks = _random_masks(rng, 100, 64)
    maps = rng.random(masks.shape) + 0.7 * masks
    exact = metrics.aupro(masks, maps)
    grid = metrics.aupro(masks, maps, num_thresholds=2000)
    assert 0.0 < exact < 1.0
    assert grid == pytest.approx(exact, abs=0.01)

"""The test metrics broken down by defect size: are the small defects found, or only the big ones?

One pooled pixel AUROC or AUPRO hides whether a model finds small defects: on real parts the
defects' areas span orders of magnitude (bsdata's pitting: from a few dozen pixels to a few
percent of the image). `by_defect_size` sorts the anomalous test images by the area of their
mask (as a fraction of the image's inspected pixels, so images of different sizes compare) and
splits them into thirds of equal count: small, medium, large. Each third is scored against all
normal test images, by the same metric functions as the pooled figures
(`mhp_keras.scoring.metrics`). `mhp_keras.scoring.evaluation` adds the result to metrics.json
as `by_defect_size`.
"""

from __future__ import annotations

import numpy as np

from mhp_keras.scoring import metrics as metric_fns

THIRDS = ("small", "medium", "large")


def area_fractions(masks, maps) -> np.ndarray:
    """Per image, its defect pixels over its inspected pixels (inside the region of interest,
    where the map is finite); 0 for an image without any inspected pixel."""
    fractions = []
    for mask, values in zip(*metric_fns.image_pairs(masks, maps), strict=True):
        inside = ~np.isnan(values)
        fractions.append(float(np.sum(mask & inside)) / max(int(inside.sum()), 1))
    return np.asarray(fractions, np.float64)


def by_defect_size(labels, scores, masks, maps, pixel_threshold: float) -> list[dict]:
    """One row per third of the anomalous test images with defect pixels, smallest first.

    A row has the third's name, its number of images `n`, the range of their defect area
    fractions, `image_auroc` (the third's images against every normal test image), and
    `pixel_auroc`, `aupro` and `pixel_f1` (at `pixel_threshold`) on the maps of the normal
    images together with the third's. Fewer than 3 such images give fewer rows; none, no rows.
    Anomalous images whose mask is empty (a defect kind without masks) are in no third.
    """
    labels, scores = np.asarray(labels), np.asarray(scores, np.float64)
    masks, maps = metric_fns.image_pairs(masks, maps)
    fractions = area_fractions(masks, maps)
    normal = np.flatnonzero(labels == 0)
    defects = np.flatnonzero((labels == 1) & (fractions > 0))
    # A stable sort: images of equal area keep file order, so the thirds are reproducible.
    ordered = defects[np.argsort(fractions[defects], kind="stable")]
    groups = np.array_split(ordered, min(3, len(ordered))) if len(ordered) else []
    rows = []
    for name, group in zip(THIRDS, groups):
        chosen = np.r_[normal, group]
        sub_labels = np.r_[np.zeros(len(normal), int), np.ones(len(group), int)]
        sub_masks = [masks[i] for i in chosen]
        sub_maps = [maps[i] for i in chosen]
        rows.append(
            {
                "third": name,
                "n": int(len(group)),
                "area_fraction_min": float(fractions[group].min()),
                "area_fraction_max": float(fractions[group].max()),
                "image_auroc": metric_fns.image_metrics(sub_labels, scores[chosen])["image_auroc"],
                "pixel_auroc": metric_fns.pixel_auroc(sub_masks, sub_maps),
                "aupro": metric_fns.aupro(sub_masks, sub_maps),
                "pixel_f1": metric_fns.pixel_decisions(sub_masks, sub_maps, pixel_threshold)[
                    "pixel_f1"
                ],
            }
        )
    return rows

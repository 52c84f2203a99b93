"""A folder of good images is enough to start: `data.name=folders` with `data.normal_dir`.

On a new production line there are only good images, no labelled class folders. This loader
splits one folder of normal images into the one-class protocol's three parts, and optionally adds
labelled anomalies (and their masks) to the test split once some are collected:

    data.normal_dir/*.png|jpg|...   normal images: train, validation and a normal test part
    data.abnormal_dir/*.png|...     optional: anomalous test images (label 1)
    data.mask_dir/<stem>.png        optional: the mask of abnormal_dir's <stem>.<ext>; the name may
    data.mask_dir/<stem>_mask.png   also end in _mask, and any image extension is accepted

The split is deterministic for `data.split_seed`: first `data.test_fraction` of the normal images
(at least one) become normal test images, then `data.val_fraction` of the rest is held out for the
threshold, then train is capped at `data.max_train` (`split_train_val`, as for every loader). The
test part therefore does not move when `data.val_fraction` or `data.max_train` change. Subfolders
are not read, so anomalies may live in a subfolder of normal_dir.

Class names are ["normal", "anomalous"] and the normal class is "normal"; `data.normal_class` is
ignored in this mode (there is nothing to choose). Without `data.abnormal_dir` the test split holds
normal images only: the evaluation reports their score distribution at the threshold, and image
AUROC stays undefined until anomalous images are added.
"""

from __future__ import annotations

import os

import numpy as np

from mhp_keras.data.base import ImageSet, OneClassData, split_train_val
from mhp_keras.data.image_files import IMAGE_EXTENSIONS, list_files, validate_image_files
from mhp_keras.data.masks import check_mask_size
from mhp_keras.errors import ConfigError, DataError

NORMAL = "normal"
ANOMALOUS = "anomalous"
CLASS_NAMES = [NORMAL, ANOMALOUS]
MASK_SUFFIX = "_mask"
EXPECTED = {
    "normal_dir": "a folder of normal (good) images",
    "abnormal_dir": "a folder of anomalous images",
    "mask_dir": "a folder of masks named like data.abnormal_dir's images",
}


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _check_folders(config) -> dict[str, str]:
    """The folders set among normal_dir, abnormal_dir and mask_dir; each must exist, and differ."""
    data = config.data
    if data.mask_dir and not data.abnormal_dir:
        raise ConfigError(
            f"data.mask_dir={data.mask_dir!r} is set but data.abnormal_dir is not: masks mark the "
            "anomalies of data.abnormal_dir's images. Set data.abnormal_dir or unset data.mask_dir."
        )
    folders = {key: data[key] for key in EXPECTED if data[key]}
    for key, folder in folders.items():
        if not os.path.isdir(folder):
            raise ConfigError(
                f"data.{key}={folder!r} does not exist (or is not a folder): expected "
                f"{EXPECTED[key]}."
            )
    # One folder under two keys would put the same files in two roles (masks read as images).
    seen: dict[str, str] = {}
    for key, folder in folders.items():
        real = os.path.realpath(folder)
        if real in seen:
            raise ConfigError(
                f"data.{seen[real]} and data.{key} are the same folder ({folder!r}): normal "
                "images, anomalous images and masks each need a folder of their own."
            )
        seen[real] = key
    return folders


def _listed(folder: str, key: str) -> list[str]:
    files = list_files(folder)
    if not files:
        raise DataError(
            f"No image files in {folder} (data.{key}): expected {EXPECTED[key]} "
            f"({', '.join(IMAGE_EXTENSIONS)}). Subfolders are not read."
        )
    return files


def _readable(files: list[str], folder: str, key: str, on_bad_file: str) -> list[str]:
    kept = validate_image_files(files, on_bad_file)
    if not kept:
        raise DataError(
            f"No readable images left in {folder} (data.{key}) after skipping {len(files)} bad "
            "file(s) (data.on_bad_file=skip)."
        )
    return kept


def _image_set(paths: list[str], label: int, prefix: str) -> ImageSet:
    return ImageSet(
        labels=np.full(len(paths), label, np.int32),
        ids=[f"{prefix}/{os.path.basename(p)}" for p in paths],
        paths=list(paths),
    )


def _split(normal: ImageSet, config) -> tuple[ImageSet, ImageSet, ImageSet]:
    """(train, val, normal test) of the normal images, deterministic for data.split_seed."""
    data = config.data
    if not 0.0 < data.test_fraction < 1.0:
        raise ConfigError(
            f"data.test_fraction={data.test_fraction!r}: expected a fraction in (0, 1), the share "
            "of data.normal_dir's images held out as normal test images."
        )
    n = len(normal)
    # At least one, so that every run has normal test images to report on.
    n_test = max(1, int(round(n * data.test_fraction)))
    n_val = int(round((n - n_test) * data.val_fraction))
    if n - n_test - n_val < 1:
        raise DataError(
            f"Only {n} images in data.normal_dir={data.normal_dir!r}: too few to hold out "
            f"data.test_fraction={data.test_fraction} for testing and data.val_fraction="
            f"{data.val_fraction} of the rest for the threshold and still train. Add images or "
            "lower the fractions."
        )
    order = np.random.default_rng(data.split_seed).permutation(n)
    test = normal.subset(np.sort(order[:n_test]))
    train, val = split_train_val(normal.subset(np.sort(order[n_test:])), config)
    return train, val, test


def _masks_by_image(images: list[str], masks: list[str], abnormal_dir: str) -> dict[str, str]:
    """image path -> mask path, matched by stem (`<stem>` or `<stem>_mask`); every mask must
    match exactly one image and no image may have two masks."""
    by_stem: dict[str, str] = {}
    for image in images:
        stem = _stem(image)
        if stem in by_stem:
            raise DataError(
                f"Images {by_stem[stem]} and {image} share the name {stem!r}, so a mask in "
                "data.mask_dir cannot tell them apart: rename one of them."
            )
        by_stem[stem] = image
    matched: dict[str, str] = {}
    for mask in masks:
        stem = _stem(mask)
        names = [stem]
        if stem.endswith(MASK_SUFFIX):
            names.append(stem[: -len(MASK_SUFFIX)])
        hits = [by_stem[name] for name in names if name in by_stem]
        if not hits:
            raise DataError(
                f"Mask {mask} has no matching anomalous image: expected an image named "
                f"{names[-1]}.* in {abnormal_dir} (data.abnormal_dir)."
            )
        if len(hits) > 1:
            raise DataError(
                f"Mask {mask} matches two anomalous images, {hits[0]} and {hits[1]}: rename one."
            )
        image = hits[0]
        if image in matched:
            raise DataError(
                f"Anomalous image {image} has two masks, {matched[image]} and {mask}: keep one."
            )
        matched[image] = mask
    return matched


def _anomalies(folders: dict[str, str], on_bad_file: str) -> tuple[list[str], list[str] | None]:
    """Anomalous image paths and, with data.mask_dir, their mask paths (else None)."""
    abnormal_dir = folders.get("abnormal_dir")
    if not abnormal_dir:
        return [], None
    listed = _listed(abnormal_dir, "abnormal_dir")
    images = _readable(listed, abnormal_dir, "abnormal_dir", on_bad_file)
    mask_dir = folders.get("mask_dir")
    if not mask_dir:
        return images, None
    # Matched against every listed file, so the mask of an image skipped as bad is no error.
    matched = _masks_by_image(listed, list_files(mask_dir), abnormal_dir)
    good_masks = set(validate_image_files(sorted(matched.values()), on_bad_file, "mask"))
    kept, masks = [], []
    for image in images:
        mask = matched.get(image)
        if mask is None:
            stem = _stem(image)
            raise DataError(
                f"Anomalous image {image} has no mask: expected {stem}.png or {stem}{MASK_SUFFIX}"
                f".png (any image extension) in {mask_dir} (data.mask_dir). With data.mask_dir "
                "set, every image of data.abnormal_dir needs its mask."
            )
        if mask not in good_masks:
            continue  # its mask was bad and skipped (logged); so is the image
        check_mask_size(mask, image)
        kept.append(image)
        masks.append(mask)
    return kept, masks


def load_normal_dir(config) -> OneClassData:
    """OneClassData from data.normal_dir, abnormal_dir and mask_dir (see the module doc)."""
    on_bad_file = config.data.on_bad_file
    folders = _check_folders(config)
    normal_dir = folders["normal_dir"]
    normal_paths = _readable(
        _listed(normal_dir, "normal_dir"), normal_dir, "normal_dir", on_bad_file
    )
    train, val, normal_test = _split(_image_set(normal_paths, 0, NORMAL), config)
    abnormal_paths, abnormal_masks = _anomalies(folders, on_bad_file)
    anomalous = _image_set(abnormal_paths, 1, ANOMALOUS)
    test = ImageSet(
        labels=np.concatenate([normal_test.labels, anomalous.labels]),
        ids=normal_test.ids + anomalous.ids,
        paths=normal_test.paths + anomalous.paths,
        # "" is the pipeline's all-normal mask, for the normal test images.
        mask_paths=None if abnormal_masks is None else [""] * len(normal_test) + abnormal_masks,
    )
    return OneClassData(
        train=train,
        val=val,
        test=test,
        channels=config.data.channels,
        class_names=list(CLASS_NAMES),
        normal_class=NORMAL,
    )

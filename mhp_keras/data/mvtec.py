"""MVTec AD (Bergmann et al., CVPR 2019), the standard industrial-inspection benchmark with
pixel-accurate defect masks, read from its published folder layout (download it yourself):

    data.root/<category>/train/good/*.png            normal training images
    data.root/<category>/test/good/*.png             normal test images
    data.root/<category>/test/<defect>/*.png         anomalous test images, one folder per defect
    data.root/<category>/ground_truth/<defect>/<name>_mask.png

Train and validation hold train/good (validation split off by `data.val_fraction` with
`data.split_seed`); test holds everything under test/, labelled 1 for defects, with one mask per
image ("" for good images, which the pipeline reads as all-zero). The normal class is always
"good"; class_names = ["good", *defects]. Grey (e.g. grid, screw) and RGB categories both work:
the pipeline converts every image to `data.channels`. Any dataset in the same layout (e.g. own
inspection data) loads the same way.
"""

from __future__ import annotations

import os

import numpy as np

from mhp_keras.data.base import ImageSet, OneClassData, split_train_val
from mhp_keras.data.image_files import (
    IMAGE_EXTENSIONS,
    check_data_root,
    list_files,
    list_subfolders,
    validate_image_files,
)
from mhp_keras.data.masks import check_mask_size
from mhp_keras.errors import ConfigError, DataError

NORMAL = "good"
MASK_SUFFIX = "_mask"


def categories(root: str) -> list[str]:
    """The categories under an MVTec AD root: its subfolders that hold a train/ folder."""
    check_data_root(root, "mvtec", "the MVTec AD folder (the one holding bottle/, cable/, ...)")
    return [c for c in list_subfolders(root) if os.path.isdir(os.path.join(root, c, "train"))]


def _category_dir(root: str, category: str) -> str:
    found = categories(root)
    if not category or not os.path.isdir(os.path.join(root, category)):
        what = "is not set" if not category else f"={category!r} is not a folder in {root}"
        raise DataError(
            f"data.category {what}: expected one of the categories found under data.root: "
            f"{found or 'none (no subfolder with a train/ folder)'}."
        )
    return os.path.join(root, category)


def _folder_files(folder: str, on_bad_file: str) -> list[str]:
    files = validate_image_files(list_files(folder), on_bad_file)
    if not files:
        raise DataError(
            f"No images in {folder}: expected image files ({', '.join(IMAGE_EXTENSIONS)})."
        )
    return files


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _masks_for(category_dir: str) -> dict[str, str]:
    """'<defect>/<image stem>' -> mask path, for every mask under ground_truth/."""
    gt_dir = os.path.join(category_dir, "ground_truth")
    masks = {}
    if not os.path.isdir(gt_dir):
        return masks
    for folder in list_subfolders(gt_dir):
        for path in list_files(os.path.join(gt_dir, folder)):
            stem = _stem(path)
            key = f"{folder}/{stem[: -len(MASK_SUFFIX)] if stem.endswith(MASK_SUFFIX) else stem}"
            masks[key] = path
    return masks


def _test_set(category_dir: str, on_bad_file: str) -> tuple[ImageSet, list[str]]:
    """test/* with labels and mask paths; checks every defect image against its mask."""
    test_dir = os.path.join(category_dir, "test")
    if not os.path.isdir(test_dir):
        raise DataError(
            f"Missing folder {test_dir}: an MVTec AD category needs test/good/ and test/<defect>/."
        )
    defects = [d for d in list_subfolders(test_dir) if d != NORMAL]
    folders = ([NORMAL] if os.path.isdir(os.path.join(test_dir, NORMAL)) else []) + defects
    if not folders:
        raise DataError(f"No image folders in {test_dir}: expected test/good/ and test/<defect>/.")
    all_masks = _masks_for(category_dir)
    # Masks that point at no test image are a mistake in the dataset (or a renamed image).
    images_by_key = {}
    for folder in folders:
        for path in list_files(os.path.join(test_dir, folder)):
            images_by_key[f"{folder}/{_stem(path)}"] = path
    for key, mask in sorted(all_masks.items()):
        if key not in images_by_key or key.startswith(NORMAL + "/"):
            raise DataError(
                f"Mask {mask} has no matching defect image: expected an image named "
                f"{key.split('/', 1)[1]}.* in {os.path.join(test_dir, key.split('/', 1)[0])}."
            )
    good_masks = set(validate_image_files(sorted(all_masks.values()), on_bad_file, "mask"))
    paths, labels, mask_paths, ids = [], [], [], []
    for folder in folders:
        for path in _folder_files(os.path.join(test_dir, folder), on_bad_file):
            key = f"{folder}/{_stem(path)}"
            mask = ""
            if folder != NORMAL:
                mask = all_masks.get(key, "")
                if not mask:
                    expected = os.path.join(
                        category_dir, "ground_truth", folder, _stem(path) + MASK_SUFFIX + ".png"
                    )
                    raise DataError(
                        f"Defect image {path} has no mask: expected {expected}. Every image under "
                        "test/<defect>/ needs its ground-truth mask."
                    )
                if mask not in good_masks:
                    continue  # its mask was bad and skipped (logged); so is the image
                check_mask_size(mask, path)
            paths.append(path)
            labels.append(int(folder != NORMAL))
            mask_paths.append(mask)
            ids.append(f"{folder}/{os.path.basename(path)}")
    test = ImageSet(labels=labels, ids=ids, paths=paths, mask_paths=mask_paths)
    return test, defects


def load_mvtec(config) -> OneClassData:
    """OneClassData for MVTec AD category `data.category` under `data.root` (see the module doc)."""
    on_bad_file = config.data.on_bad_file
    category_dir = _category_dir(config.data.root, config.data.category)
    if str(config.data.normal_class) not in (NORMAL, "0"):
        raise ConfigError(
            f"data.normal_class={config.data.normal_class!r}: for data.name=mvtec the normal class "
            f"is always {NORMAL!r} (defect types only occur in the test split)."
        )
    train_dir = os.path.join(category_dir, "train", NORMAL)
    if not os.path.isdir(train_dir):
        raise DataError(
            f"Category {config.data.category!r} has no folder {train_dir}: expected the normal "
            "training images in train/good/."
        )
    train_paths = _folder_files(train_dir, on_bad_file)
    train_all = ImageSet(
        labels=np.zeros(len(train_paths), np.int32),
        ids=[f"train/{os.path.basename(p)}" for p in train_paths],
        paths=train_paths,
    )
    train, val = split_train_val(train_all, config)
    test, defects = _test_set(category_dir, on_bad_file)
    return OneClassData(
        train=train,
        val=val,
        test=test,
        channels=config.data.channels,
        class_names=[NORMAL, *defects],
        normal_class=NORMAL,
    )

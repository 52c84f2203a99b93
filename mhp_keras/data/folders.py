"""A labelled image dataset on disk as one folder per class, for data without a tfds builder.

Layout (class names are the folder names; the classes are the union of both splits, sorted):

    data.root/train/<class_name>/*.png|jpg|jpeg|bmp|gif|webp|tif|tiff
    data.root/test/<class_name>/*.png|jpg|jpeg|bmp|gif|webp|tif|tiff

The paper's one-class protocol is applied as for any labelled source: train and validation keep
the `data.normal_class` images of train/, test keeps every class of test/, anomalous = any other
class. A class may appear in only one split (for example anomaly classes only under test/), but
the normal class needs training images.

Without labelled classes, `data.normal_dir` (a single folder of normal images, with optional
`data.abnormal_dir` and `data.mask_dir`) replaces `data.root`: see `mhp_keras.data.normal_dir`.
Setting both is an error, and the two anomaly folders are refused with `data.root`, whose
anomalies are its test class folders.
"""

from __future__ import annotations

import os

import numpy as np

from mhp_keras.data.base import ImageSet, OneClassData
from mhp_keras.data.image_files import (
    IMAGE_EXTENSIONS,
    check_data_root,
    list_files,
    list_subfolders,
    validate_image_files,
)
from mhp_keras.data.normal_dir import load_normal_dir
from mhp_keras.data.protocol import one_class_split, resolve_normal_class
from mhp_keras.errors import ConfigError, DataError

SPLITS = ("train", "test")


def _check_root(root: str) -> None:
    check_data_root(
        root, "folders", "a folder holding train/<class>/ and test/<class>/ image folders"
    )
    for split in SPLITS:
        if not os.path.isdir(os.path.join(root, split)):
            raise DataError(
                f"Missing split folder {os.path.join(root, split)}: data.root={root!r} must hold "
                "train/<class>/ and test/<class>/ image folders."
            )


def _class_files(root: str, split: str, class_name: str) -> list[str]:
    """The files of one class folder; an existing but empty class folder is an error."""
    folder = os.path.join(root, split, class_name)
    if not os.path.isdir(folder):
        return []
    files = list_files(folder)
    if not files:
        raise DataError(
            f"Empty class folder {folder}: expected image files ({', '.join(IMAGE_EXTENSIONS)}) "
            "in it. Remove the folder or add images."
        )
    return files


def _image_set(
    root: str, split: str, files: dict[str, list[str]], names: list[str], on_bad_file: str
) -> tuple[ImageSet, np.ndarray]:
    """Validated files of the given classes as an ImageSet, with their class indices."""
    paths, classes = [], []
    for name, candidates in files.items():
        kept = validate_image_files(candidates, on_bad_file)
        if not kept:
            raise DataError(
                f"No readable images left in class folder {os.path.join(root, split, name)} after "
                f"skipping {len(candidates)} bad file(s) (data.on_bad_file=skip)."
            )
        paths += kept
        classes += [names.index(name)] * len(kept)
    ids = [os.path.relpath(p, os.path.join(root, split)).replace(os.sep, "/") for p in paths]
    classes = np.asarray(classes, dtype=np.int32)
    return ImageSet(labels=classes, ids=ids, paths=paths), classes


def _check_source(config) -> None:
    """Exactly one of data.root and data.normal_dir; the anomaly folders only with normal_dir."""
    data = config.data
    if data.root and data.normal_dir:
        raise ConfigError(
            f"data.root={data.root!r} and data.normal_dir={data.normal_dir!r} are both set: "
            "data.name=folders reads either labelled class folders (data.root) or one folder of "
            "normal images (data.normal_dir). Unset one of them."
        )
    if not data.root and not data.normal_dir:
        raise ConfigError(
            "data.root is not set: for data.name=folders, point --config.data.root at a folder "
            "holding train/<class>/ and test/<class>/ image folders, or --config.data.normal_dir "
            "at a folder of normal (good) images."
        )
    for key in ("abnormal_dir", "mask_dir"):
        if data.root and data[key]:
            raise ConfigError(
                f"data.{key}={data[key]!r} is only read with data.normal_dir: with data.root the "
                "anomalies are the test/<class>/ folders other than data.normal_class. Unset "
                f"data.{key}, or use data.normal_dir instead of data.root."
            )


def load_class_folders(config) -> OneClassData:
    """OneClassData from `data.root/{train,test}/<class>/` image folders, or from
    `data.normal_dir` (see the module doc)."""
    _check_source(config)
    if config.data.normal_dir:
        return load_normal_dir(config)
    root = config.data.root
    on_bad_file = config.data.on_bad_file
    _check_root(root)
    per_split = {split: list_subfolders(os.path.join(root, split)) for split in SPLITS}
    for split in SPLITS:
        if not per_split[split]:
            raise DataError(
                f"No class folders in {os.path.join(root, split)}: expected one subfolder of "
                "images per class (for example train/good/ and test/good/, test/broken/)."
            )
    names = sorted(set(per_split["train"]) | set(per_split["test"]))
    normal = names[resolve_normal_class(config.data.normal_class, names)]
    # Every class folder must hold files; only the files used (normal train, all test) are opened.
    files = {s: {n: _class_files(root, s, n) for n in per_split[s]} for s in SPLITS}
    if not files["train"].get(normal):
        raise DataError(
            f"The normal class {normal!r} (data.normal_class) has no training folder "
            f"{os.path.join(root, 'train', normal)}: the model trains on normal images only."
        )
    train, train_classes = _image_set(
        root, "train", {normal: files["train"][normal]}, names, on_bad_file
    )
    test, test_classes = _image_set(root, "test", files["test"], names, on_bad_file)
    return one_class_split(train, train_classes, test, test_classes, names, config)

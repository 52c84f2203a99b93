"""The in-memory description of a one-class dataset, shared by every loader.

Loaders only find and label the images; `mhp_keras.data.pipeline` turns an `ImageSet` into a
`tf.data` pipeline. Keeping the two apart lets every source (arrays, files, tfds) share one
pipeline.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class ImageSet:
    """One split: either in-memory images or image files, with labels and optional masks.

    Exactly one of `images` (float32 [N, h, w, C] in [0, 1]) and `paths` (image files decoded by the
    pipeline) is set. `labels` is int32 [N] with 1 = anomalous. Masks are optional: `masks`
    (float32 [N, h, w, 1] in {0, 1}) or `mask_paths` (one path per image, "" for an all-normal
    mask). `ids` names each image in reports and `scores.csv`.
    """

    labels: np.ndarray
    ids: list[str]
    images: np.ndarray | None = None
    paths: list[str] | None = None
    masks: np.ndarray | None = None
    mask_paths: list[str] | None = None

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int32)
        if (self.images is None) == (self.paths is None):
            raise ValueError("ImageSet needs exactly one of images and paths")
        n = len(self.labels)
        for name in ("ids", "images", "paths", "masks", "mask_paths"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"ImageSet.{name} has {len(value)} entries, labels has {n}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def has_masks(self) -> bool:
        return self.masks is not None or self.mask_paths is not None

    def subset(self, index) -> ImageSet:
        """The rows selected by an integer index array, as a new ImageSet."""
        index = np.asarray(index, dtype=np.int64)

        def pick(value):
            if value is None:
                return None
            if isinstance(value, np.ndarray):
                return value[index]
            return [value[i] for i in index]

        return ImageSet(
            labels=self.labels[index],
            ids=pick(self.ids),
            images=pick(self.images),
            paths=pick(self.paths),
            masks=pick(self.masks),
            mask_paths=pick(self.mask_paths),
        )


@dataclasses.dataclass
class OneClassData:
    """The one-class protocol: train and val hold normal images only; test holds both kinds."""

    train: ImageSet
    val: ImageSet
    test: ImageSet
    channels: int
    class_names: list[str]
    normal_class: str

    @property
    def has_masks(self) -> bool:
        return self.test.has_masks


def split_normal_train(
    images: ImageSet, val_fraction: float, seed: int
) -> tuple[ImageSet, ImageSet]:
    """Split normal training images into train and validation, deterministically for a seed."""
    order = np.random.default_rng(seed).permutation(len(images))
    n_val = int(round(len(images) * val_fraction))
    if len(images) - n_val < 1:
        from mhp_keras.errors import DataError

        raise DataError(
            f"Only {len(images)} normal training images: too few to hold out a validation fraction "
            f"of {val_fraction} (data.val_fraction) and still train."
        )
    return images.subset(np.sort(order[n_val:])), images.subset(np.sort(order[:n_val]))


def split_train_val(normal_images: ImageSet, config) -> tuple[ImageSet, ImageSet]:
    """(train, val) of a source's normal training images, the same for every dataset.

    The validation split (`data.val_fraction` with `data.split_seed`) comes first, so it never
    depends on `data.max_train`; then train is cut to its first `data.max_train` images (0 = all).
    """
    train, val = split_normal_train(normal_images, config.data.val_fraction, config.data.split_seed)
    max_train = config.data.max_train
    if max_train and len(train) > max_train:
        train = train.subset(np.arange(max_train))
    return train, val

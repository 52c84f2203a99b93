"""The synthetic texture-defect dataset: disjoint train/test regions, exact masks, determinism."""

import numpy as np
import pytest
from config_helpers import data_config, images_and_masks
from numpy.lib.stride_tricks import sliding_window_view

from mhp_keras.data import load_data
from mhp_keras.data.pipeline import dataset_for_split
from mhp_keras.data.textures import (
    DEFECTS,
    TEXTURES,
    TRAIN_ROWS,
    add_defect,
    add_frames,
    texture_photo,
)
from mhp_keras.errors import ConfigError

PATCH = 32


def config_for(**data):
    defaults = dict(
        name="textures",
        image_size=16,
        channels=1,
        batch_size=64,
        patch_size=PATCH,
        train_patches=20,
        test_patches=16,
        val_fraction=0.25,
    )
    return data_config(defaults | data)


def rows_of(patches, photo):
    """The photo row at which each patch occurs exactly (-1 if nowhere)."""
    rows = sliding_window_view(photo, PATCH, axis=1)  # [512, 481, PATCH] row pieces
    found = []
    for patch in patches:
        candidates = np.argwhere((rows == patch[0]).all(axis=-1))  # matches of the first row
        hits = [
            r for r, c in candidates if np.array_equal(photo[r : r + PATCH, c : c + PATCH], patch)
        ]
        found.append(int(hits[0]) if hits else -1)
    return np.array(found)


def test_default_normal_class_and_splits():
    data = load_data(config_for())
    assert data.class_names == list(TEXTURES) and data.normal_class == "brick"
    assert (len(data.train), len(data.val), len(data.test)) == (15, 5, 16)
    assert data.test.labels.tolist() == [0] * 8 + [1] * 8
    assert data.train.images.shape == (15, PATCH, PATCH, 1)
    assert data.test.masks.shape == (16, PATCH, PATCH, 1)
    assert set(np.unique(data.test.masks)) == {0.0, 1.0}
    assert data.test.masks[:8].sum() == 0
    assert np.all(data.test.masks[8:].sum(axis=(1, 2, 3)) > 0)
    kinds = [i.split("_")[1] for i in data.test.ids[8:]]
    assert kinds == list(DEFECTS) * 2


def test_train_and_test_come_from_disjoint_regions():
    data = load_data(config_for(normal_class="gravel"))
    photo = texture_photo("gravel")
    train_rows = rows_of(np.concatenate([data.train.images, data.val.images])[..., 0], photo)
    assert np.all(train_rows >= 0) and np.all(train_rows + PATCH <= TRAIN_ROWS)
    normal_rows = rows_of(data.test.images[:8, ..., 0], photo)
    assert np.all(normal_rows >= TRAIN_ROWS)


def test_deterministic_from_split_seed():
    a, b = load_data(config_for()), load_data(config_for())
    np.testing.assert_array_equal(a.test.images, b.test.images)
    np.testing.assert_array_equal(a.test.masks, b.test.masks)
    np.testing.assert_array_equal(a.train.images, b.train.images)
    c = load_data(config_for(split_seed=1))
    assert not np.array_equal(a.test.images, c.test.images)


@pytest.mark.parametrize("kind", DEFECTS)
def test_each_defect_changes_only_and_visibly_its_mask(kind):
    photo = texture_photo("brick")
    photos = {name: texture_photo(name) for name in TEXTURES}
    rng = np.random.default_rng(0)
    for trial in range(5):
        patch = photo[400 : 400 + PATCH, 32 * trial : 32 * trial + PATCH].copy()
        out, mask = add_defect(patch, kind, rng, 2.0, photos, "brick")
        assert mask.dtype == bool and 0 < mask.mean() < 0.5
        np.testing.assert_array_equal(out[~mask], patch[~mask])
        change = np.abs(out[mask] - patch[mask]).mean()
        assert change > 0.5 * patch.std(), (kind, trial, change)
        assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("channels", [1, 3])
def test_through_the_pipeline(channels):
    config = config_for(channels=channels)
    data = load_data(config)
    (train,) = list(dataset_for_split(data.train, config, training=True))
    assert train.shape == (15, 16, 16, channels)
    images, masks, labels = images_and_masks(data.test, config)
    assert images.shape == (16, 16, 16, channels) and masks.shape == (16, 16, 16, 1)
    assert images.min() >= 0 and images.max() <= 1
    assert set(np.unique(masks)) == {0.0, 1.0}
    # Nearest resizing keeps every defect (scratches are >= 2 patch pixels wide at scale 2).
    assert masks[:8].sum() == 0 and np.all(masks[8:].sum(axis=(1, 2, 3)) > 0)
    np.testing.assert_array_equal(masks[..., 0], data.test.masks[:, 1::2, 1::2, 0])
    assert labels.tolist() == data.test.labels.tolist()


def test_frames_are_dark_vary_per_image_and_leave_the_rest():
    patches = np.random.default_rng(0).uniform(0.4, 1.0, (50, 20, 20)).astype(np.float32)
    framed = add_frames(patches, 0.25, np.random.default_rng(1))
    dark = framed < 0.2  # the frame's level is at most 0.1 plus faint noise
    np.testing.assert_array_equal(framed[~dark], patches[~dark])
    widths = []
    for d in dark:
        top = int(np.argmin(d[:, 10])) if not d[:, 10].all() else 20
        widths.append(top)
        # A frame is a band along each edge: every dark pixel lies within 5 px (0.25 * 20) of one.
        rows, cols = np.nonzero(d)
        assert np.all(np.minimum.reduce([rows, cols, 19 - rows, 19 - cols]) < 5)
    assert len(set(widths)) > 3 and max(widths) <= 5 and min(widths) == 0
    assert dark.sum() > 0


def test_frame_border_frames_every_split_and_keeps_the_texture():
    plain = load_data(config_for())
    framed = load_data(config_for(frame_border=0.2))
    np.testing.assert_array_equal(framed.test.labels, plain.test.labels)
    np.testing.assert_array_equal(framed.test.masks, plain.test.masks)
    normal_test = plain.test.labels == 0  # a defect's strength follows its patch's contrast
    for name in ("train", "val", "test"):
        a, b = getattr(plain, name).images, getattr(framed, name).images
        if name == "test":
            a, b = a[normal_test], b[normal_test]
        changed = a != b
        assert changed.any(axis=(1, 2, 3)).mean() > 0.5  # most patches have a frame
        assert np.all(b[changed] <= 0.15)  # and it is dark; the rest is untouched


def test_bad_values():
    with pytest.raises(ConfigError, match=r"data.frame_border=0.6"):
        load_data(config_for(frame_border=0.6))
    with pytest.raises(ConfigError, match=r"'marble'.*\['brick', 'grass', 'gravel'\]"):
        load_data(config_for(normal_class="marble"))
    with pytest.raises(ConfigError, match="data.patch_size=200"):
        load_data(config_for(patch_size=200))

"""An offline defect-localization demo: texture patches with synthetic defects and exact masks.

The paper's localization experiment (metal surfaces) needs data that cannot be downloaded here, so
this source builds a small inspection task from the texture photographs bundled with scikit-image
(brick, grass, gravel; 512 x 512 grey). One texture is normal (`data.normal_class`, default
"brick"; an index picks brick/grass/gravel in that order). Patches of `data.patch_size` pixels are
cut from disjoint regions of its photo: training and validation patches from the top three
quarters, test patches from the bottom quarter, so test patches are unseen texture. Half of the
test patches get one synthetic defect each, with a pixel-exact mask, cycling through:

- scratch: a thin straight line, brighter or darker than the surface;
- blob: an ellipse whose brightness is shifted (the texture stays visible under it);
- paste: a piece of another texture (or of this one, turned by 90 degrees), rescaled to the
  covered region's brightness and the patch's contrast, so mainly its structure gives it away;
- spots: a few small discs of flat colour (paint drops, dirt), where the texture is gone.

Defect strengths are set relative to the patch's own contrast, so they are visible but not
trivially separable by brightness alone. Everything is generated with numpy from
`data.split_seed`, so the data are identical on every run.

With `data.frame_border` > 0 every patch, normal or not, gets a dark frame whose width varies from
image to image and side to side, as inspection images often have (the part does not fill the
field of view the same way twice). The frame is normal content, but it is an easy cue for a
discriminator, which makes this set a test of the adversarial training's balance.

Its own config keys (defaults in `mhp_keras.config.defaults`): data.patch_size, data.train_patches
(train + validation patches), data.test_patches (half of them defective) and data.frame_border.
"""

from __future__ import annotations

import numpy as np

from mhp_keras.data.base import ImageSet, OneClassData, split_train_val
from mhp_keras.data.protocol import resolve_normal_class
from mhp_keras.errors import ConfigError

TEXTURES = ("brick", "grass", "gravel")
DEFECTS = ("scratch", "blob", "paste", "spots")
PHOTO_SIZE = 512
TRAIN_ROWS = 384  # rows [0, 384) give train/val patches, rows [384, 512) give test patches


def texture_photo(name: str) -> np.ndarray:
    """scikit-image's bundled texture photo as float32 [512, 512] in [0, 1]."""
    from skimage import data

    return getattr(data, name)().astype(np.float32) / 255.0


def _random_patches(
    photo: np.ndarray, rows: tuple[int, int], n: int, size: int, rng
) -> tuple[np.ndarray, np.ndarray]:
    """n square patches lying wholly within the given row range; also their (top, left)."""
    top = rng.integers(rows[0], rows[1] - size + 1, n)
    left = rng.integers(0, photo.shape[1] - size + 1, n)
    patches = np.stack([photo[t : t + size, s : s + size] for t, s in zip(top, left, strict=True)])
    return patches, np.stack([top, left], axis=1)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    return np.mgrid[0:size, 0:size].astype(np.float32)


def _polarity(patch: np.ndarray, mask: np.ndarray, rng) -> float:
    """+1 or -1: the direction with room to move within [0, 1] under the mask."""
    mean = float(patch[mask].mean()) if mask.any() else float(patch.mean())
    if mean < 0.3:
        return 1.0
    if mean > 0.7:
        return -1.0
    return float(rng.choice([-1.0, 1.0]))


def _scratch(patch: np.ndarray, rng, scale: float) -> tuple[np.ndarray, np.ndarray]:
    size = patch.shape[0]
    y, x = _grid(size)
    length = rng.uniform(0.4, 0.8) * size
    angle = rng.uniform(0, np.pi)
    cy, cx = rng.uniform(0.3, 0.7, 2) * size
    dy, dx = np.sin(angle), np.cos(angle)
    along = (y - cy) * dy + (x - cx) * dx
    across = np.abs(-(y - cy) * dx + (x - cx) * dy)
    width = rng.uniform(1.0, 1.5) * scale  # in patch pixels; at least ~1 pixel after resizing
    mask = (np.abs(along) <= length / 2) & (across <= width / 2)
    sign = _polarity(patch, mask, rng)
    std = patch.std()
    out = patch.copy()
    out[mask] = np.clip(patch[mask].mean() + sign * rng.uniform(2.0, 3.0) * std, 0, 1)
    return out, mask


def _ellipse(size: int, rng, radius: tuple[float, float]) -> np.ndarray:
    y, x = _grid(size)
    cy, cx = rng.uniform(0.25, 0.75, 2) * size
    ry, rx = rng.uniform(*radius, 2) * size
    angle = rng.uniform(0, np.pi)
    u = (y - cy) * np.cos(angle) + (x - cx) * np.sin(angle)
    v = -(y - cy) * np.sin(angle) + (x - cx) * np.cos(angle)
    return (u / ry) ** 2 + (v / rx) ** 2 <= 1.0


def _blob(patch: np.ndarray, rng, scale: float) -> tuple[np.ndarray, np.ndarray]:
    mask = _ellipse(patch.shape[0], rng, (0.1, 0.22))
    sign = _polarity(patch, mask, rng)
    out = patch.copy()
    out[mask] = np.clip(patch[mask] + sign * rng.uniform(1.0, 1.6) * patch.std(), 0, 1)
    return out, mask


def _paste(
    patch: np.ndarray, rng, scale: float, photos: dict[str, np.ndarray], normal: str
) -> tuple[np.ndarray, np.ndarray]:
    size = patch.shape[0]
    h, w = (rng.uniform(0.3, 0.5, 2) * size).astype(int)
    top, left = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
    others = [t for t in TEXTURES if t != normal]
    source = others[rng.integers(len(others))] if rng.random() < 0.5 else normal
    photo = photos[source]
    if source == normal:
        photo = np.rot90(photo)  # the same material, laid the wrong way round
    sy, sx = rng.integers(0, PHOTO_SIZE - max(h, w), 2)
    piece = photo[sy : sy + h, sx : sx + w]
    region = patch[top : top + h, left : left + w]
    # The covered region's brightness and the whole patch's contrast: on a flat region (one
    # brick face) the region's own contrast would make the piece invisible.
    contrast = max(region.std(), patch.std())
    piece = (piece - piece.mean()) / (piece.std() + 1e-6) * contrast + region.mean()
    out = patch.copy()
    out[top : top + h, left : left + w] = np.clip(piece, 0, 1)
    mask = np.zeros_like(patch, dtype=bool)
    mask[top : top + h, left : left + w] = True
    return out, mask


def _spots(patch: np.ndarray, rng, scale: float) -> tuple[np.ndarray, np.ndarray]:
    size = patch.shape[0]
    y, x = _grid(size)
    out = patch.copy()
    mask = np.zeros_like(patch, dtype=bool)
    for _ in range(rng.integers(1, 4)):
        cy, cx = rng.uniform(0.15, 0.85, 2) * size
        radius = rng.uniform(1.5, 3.0) * scale
        spot = (y - cy) ** 2 + (x - cx) ** 2 <= radius**2
        sign = _polarity(patch, spot, rng)
        out[spot] = np.clip(patch.mean() + sign * rng.uniform(1.5, 2.5) * patch.std(), 0, 1)
        mask |= spot
    return out, mask


def add_frames(patches: np.ndarray, max_fraction: float, rng) -> np.ndarray:
    """A copy of [N, size, size] patches, each in a dark frame: each side's width is drawn from
    [0, max_fraction * size] pixels, and the frame's grey level from [0, 0.1] with faint noise."""
    out = patches.copy()
    size = patches.shape[1]
    widths = rng.integers(0, int(max_fraction * size) + 1, (len(patches), 4))
    levels = rng.uniform(0.0, 0.1, len(patches))
    for patch, (top, bottom, left, right), level in zip(out, widths, levels, strict=True):
        frame = np.zeros((size, size), bool)
        frame[:top], frame[size - bottom :], frame[:, :left], frame[:, size - right :] = (True,) * 4
        noise = rng.normal(0.0, 0.01, int(frame.sum()))
        patch[frame] = np.clip(level + noise, 0.0, 1.0)
    return out


def add_defect(
    patch: np.ndarray, kind: str, rng, scale: float, photos: dict[str, np.ndarray], normal: str
) -> tuple[np.ndarray, np.ndarray]:
    """(defective patch, bool mask) for one [size, size] patch; `scale` = patch px per output px."""
    if kind == "paste":
        return _paste(patch, rng, scale, photos, normal)
    return {"scratch": _scratch, "blob": _blob, "spots": _spots}[kind](patch, rng, scale)


def load_textures(config) -> OneClassData:
    """Normal texture patches for training; half-normal, half-defective test patches with masks."""
    normal = TEXTURES[resolve_normal_class(config.data.normal_class, list(TEXTURES))]
    size = config.data.patch_size
    n_train = config.data.train_patches
    n_test = config.data.test_patches
    test_rows = PHOTO_SIZE - TRAIN_ROWS
    if not 8 <= size <= test_rows:
        raise ConfigError(
            f"data.patch_size={size}: expected 8..{test_rows} pixels (test patches are cut from "
            f"the bottom {test_rows} rows of the {PHOTO_SIZE}x{PHOTO_SIZE} photo)."
        )
    if not 0.0 <= config.data.frame_border < 0.5:
        raise ConfigError(
            f"data.frame_border={config.data.frame_border}: expected a fraction of the patch side "
            "in [0, 0.5) (0 = no frame)."
        )
    if n_train < 2 or n_test < 2:
        raise ConfigError(
            f"data.train_patches={n_train}, data.test_patches={n_test}: expected at least 2 each."
        )
    rng = np.random.default_rng(config.data.split_seed)
    photos = {name: texture_photo(name) for name in TEXTURES}
    photo = photos[normal]
    scale = max(1.0, size / config.data.image_size)

    train_x, _ = _random_patches(photo, (0, TRAIN_ROWS), n_train, size, rng)
    # Frames draw from their own generator, so the patches and defects do not change with them.
    frame_rng = np.random.default_rng([config.data.split_seed, 1])
    if config.data.frame_border > 0:
        train_x = add_frames(train_x, config.data.frame_border, frame_rng)
    train_all = ImageSet(
        labels=np.zeros(n_train, np.int32),
        ids=[f"{normal}_train_{i:04d}" for i in range(n_train)],
        images=train_x[..., None],
    )
    train, val = split_train_val(train_all, config)

    test_x, _ = _random_patches(photo, (TRAIN_ROWS, PHOTO_SIZE), n_test, size, rng)
    if config.data.frame_border > 0:
        test_x = add_frames(test_x, config.data.frame_border, frame_rng)
    masks = np.zeros_like(test_x, dtype=bool)
    labels = np.zeros(n_test, np.int32)
    ids = []
    n_normal = n_test // 2
    for i in range(n_test):
        if i < n_normal:
            ids.append(f"{normal}_normal_{i:04d}")
            continue
        kind = DEFECTS[(i - n_normal) % len(DEFECTS)]
        test_x[i], masks[i] = add_defect(test_x[i], kind, rng, scale, photos, normal)
        labels[i] = 1
        ids.append(f"{normal}_{kind}_{i:04d}")
    test = ImageSet(
        labels=labels,
        ids=ids,
        images=test_x[..., None].astype(np.float32),
        masks=masks[..., None].astype(np.float32),
    )
    return OneClassData(
        train=train,
        val=val,
        test=test,
        channels=config.data.channels,
        class_names=list(TEXTURES),
        normal_class=normal,
    )

"""Tiled inference: score an image of any size at native resolution, tile by tile.

A model trained on `image_size` tiles (`data.crop=tile`) must be scored on tiles of the same scale;
shrinking a 2,000 px image to 64 px would make a few-pixel defect vanish. These functions cut an
image into `tile` x `tile` tiles whose origins are `stride` apart, score one row of tiles at a
time (so memory grows with a row of tiles, not with the whole image), and stitch the per-tile
outputs back into one map of the image's size, blending where tiles overlap.

Blending, not plain averaging: a model reconstructs a tile worst near its edges (its convolutions
see padding there), so an average shows the tile grid as lines of higher NLL and seams in the best
guesses wherever one tile's edge meets another's centre. Each tile's outputs are weighted by a
separable raised-cosine window, w(t) = FLOOR + (1 - FLOOR) sin^2(pi (t + 1/2) / T) per axis, which
is close to 0 at the tile's edges and 1 at its centre, and the stitched value is
sum(w * out) / sum(w) over the covering tiles. At half-tile strides the sin^2 parts of the two
covering tiles sum to 1 (cos^2 + sin^2), so a pixel is taken almost entirely from the tile it is
most central in. FLOOR keeps every weight positive, so a pixel covered by one tile only (stride =
tile) keeps that tile's value exactly, and the window is separable, so the normaliser is the outer
product of two 1-D sums.

The grid always covers the image: along an axis of length L there are
n = 1 + ceil(max(L - tile, 0) / stride) tiles, and the image is padded at its far edges
(symmetric reflection) to tile + (n - 1) * stride; the padding's outputs are cut away again. The
stride must divide the tile, so every pixel is covered by the same pattern of k = tile / stride
overlapping tiles, which makes the overlap-add a sum of k shifted copies instead of a scatter.

Pure TensorFlow, traced into the SavedModel's signatures for any image size.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# The window's floor: small enough that a tile's edge hardly counts where a more central tile covers
# the pixel, large enough that no weight underflows.
FLOOR = 0.01


def scale_image(image: tf.Tensor, scale: float) -> tf.Tensor:
    """[H, W, C] resized by `scale` (score.tile_scale; bilinear, antialiased, clipped to [0, 1]),
    at least 1 x 1: the scale training tiles are cut at and tiled scoring scores at."""
    if scale == 1.0:
        return image
    size = tf.cast(tf.shape(image)[:2], tf.float32) * scale
    image = tf.image.resize(image, tf.maximum(tf.cast(tf.round(size), tf.int32), 1), antialias=True)
    return tf.clip_by_value(image, 0.0, 1.0)


def tile_count(length, tile: int, stride: int):
    """Tiles along an axis of `length` pixels (a tensor or int): 1 + ceil(max(L - tile, 0) / s)."""
    extra = tf.maximum(length - tile, 0)
    return 1 + (extra + stride - 1) // stride


def pad_to_grid(image: tf.Tensor, tile: int, stride: int) -> tf.Tensor:
    """[H, W, C] padded at the bottom and right to the grid's size, by symmetric reflection
    (repeated while the padding is wider than the image, which a tiny image needs)."""
    shape = tf.shape(image)
    height = tile + (tile_count(shape[0], tile, stride) - 1) * stride
    width = tile + (tile_count(shape[1], tile, stride) - 1) * stride

    def grow(img):
        h, w = tf.shape(img)[0], tf.shape(img)[1]
        pad_h = tf.minimum(height - h, h)
        pad_w = tf.minimum(width - w, w)
        return (tf.pad(img, [[0, pad_h], [0, pad_w], [0, 0]], mode="SYMMETRIC"),)

    def short(img):
        return tf.logical_or(tf.shape(img)[0] < height, tf.shape(img)[1] < width)

    (padded,) = tf.while_loop(
        short, grow, (image,), shape_invariants=(tf.TensorShape([None, None, image.shape[-1]]),)
    )
    return padded[:height, :width]


def overlap_add(blocks: tf.Tensor, k: int) -> tf.Tensor:
    """Sums tiles laid out `stride` apart along axis 0, each split into k stride-wide parts on
    axis 1: [n, k, ...] -> [n + k - 1, ...], where part b of tile j lands at position j + b."""
    total = None
    for b in range(k):
        part = blocks[:, b]
        rank = len(part.shape)
        paddings = [[b, k - 1 - b]] + [[0, 0]] * (rank - 1)
        shifted = tf.pad(part, paddings)
        total = shifted if total is None else total + shifted
    return total


def stitch_row(tile_maps: tf.Tensor, stride: int) -> tf.Tensor:
    """One row of tile outputs [n, T, T, ...] -> the band they cover [T, T + (n - 1) * s, ...],
    summed where they overlap."""
    tile = tile_maps.shape[1]
    k = tile // stride
    rest = tile_maps.shape[3:].as_list()
    n = tf.shape(tile_maps)[0]
    # [n, T, k, s, ...] -> [n, k, T, s, ...]: part b is tile columns b*s .. (b+1)*s.
    parts = tf.reshape(tile_maps, tf.concat([[n, tile, k, stride], tf.shape(tile_maps)[3:]], 0))
    parts = tf.transpose(parts, [0, 2, 1, 3] + list(range(4, 4 + len(rest))))
    summed = overlap_add(parts, k)  # [n + k - 1, T, s, ...]
    summed = tf.transpose(summed, [1, 0, 2] + list(range(3, 3 + len(rest))))
    return tf.reshape(summed, tf.concat([[tile, -1], tf.shape(tile_maps)[3:]], 0))


def window(tile: int, floor: float = FLOOR) -> np.ndarray:
    """The 1-D blending weights of a tile's pixels, float32 [tile] (see the module docstring)."""
    t = np.arange(tile, dtype=np.float64)
    return (floor + (1.0 - floor) * np.sin(np.pi * (t + 0.5) / tile) ** 2).astype(np.float32)


def coverage(length, tile: int, stride: int) -> tf.Tensor:
    """The summed window weights of the tiles covering each pixel along one axis of the padded
    grid, float32 [L_padded] (the normaliser's factor for that axis)."""
    n = tile_count(length, tile, stride)
    weights = tf.tile(tf.constant(window(tile))[None], tf.stack([n, 1]))
    k = tile // stride
    parts = tf.reshape(weights, [n, k, stride])
    return tf.reshape(overlap_add(parts, k), [-1])


def tiled_apply(image: tf.Tensor, fn, tile: int, stride: int, outputs: dict, votes: int) -> dict:
    """Runs `fn` on the tiles of one [H, W, C] image, one row of tiles at a time, and stitches.

    `fn` maps a batch of tiles [n, T, T, C] to a dict. `outputs` names the keys to stitch with
    their trailing shape after [n, T, T] (e.g. {"anomaly_map": [], "best": [C]}); each is blended
    over the tiles that cover each pixel (the window-weighted average, see the module docstring)
    and returned cut to [H, W, ...]. `fn` must also return
    "votes" [n, votes], which is summed over all tiles into the result's "votes" [votes] (e.g.
    how many tiles each hypothesis won).
    """
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    padded = pad_to_grid(image, tile, stride)
    rows = tile_count(height, tile, stride)
    cols = tile_count(width, tile, stride)
    grid_h = tile + (rows - 1) * stride
    grid_w = tile + (cols - 1) * stride
    channels = image.shape[-1]
    w = window(tile)
    weights = tf.constant(np.outer(w, w))  # [T, T]

    def row_tiles(r):
        band = padded[r * stride : r * stride + tile]  # [T, W_padded, C]
        return tf.map_fn(
            lambda x: band[:, x : x + tile],
            tf.range(cols) * stride,
            fn_output_signature=tf.TensorSpec([tile, tile, channels], image.dtype),
        )

    def body(r, sums, total_votes):
        out = fn(row_tiles(r))
        rows_index = (r * stride + tf.range(tile))[:, None]
        new = {}
        for key, trailing in outputs.items():
            tile_weights = tf.reshape(weights, [1, tile, tile] + [1] * len(trailing))
            band = stitch_row(
                tf.cast(out[key], tf.float32) * tile_weights, stride
            )  # [T, W_padded, ...]
            new[key] = tf.tensor_scatter_nd_add(sums[key], rows_index, band)
        return r + 1, new, total_votes + tf.reduce_sum(tf.cast(out["votes"], tf.float32), 0)

    sums = {
        key: tf.zeros(tf.stack([grid_h, grid_w, *trailing]), tf.float32)
        for key, trailing in outputs.items()
    }
    _, sums, total_votes = tf.while_loop(
        lambda r, *_: r < rows, body, (tf.constant(0), sums, tf.zeros([votes], tf.float32))
    )
    count = coverage(height, tile, stride)[:, None] * coverage(width, tile, stride)[None, :]
    result = {"votes": total_votes}
    for key, total in sums.items():
        divisor = tf.reshape(count, tf.stack([grid_h, grid_w] + [1] * len(outputs[key])))
        result[key] = (total / divisor)[:height, :width]
    return result

"""Every accepted image format, in files these tests write, through the training loader's check
and pipeline and through mhp-predict.

The pipeline's values are checked against the pixels each file was written from (exactly for
lossless formats, within the codec's error for JPEG and lossy WebP). mhp-predict's score of each
file, from the exported SavedModel, is checked against the Keras model's own score of the pixels
training decodes from it, so serving and training read every format alike, whichever decoder
(graph or host) a file needs.
"""

import csv
import logging
import os
import struct
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pytest
import tensorflow as tf
from model_helpers import tiny_conad
from PIL import Image

from mhp_keras.data.base import ImageSet
from mhp_keras.data.image_files import (
    file_needs_host_decoding,
    list_image_files,
    validate_image_files,
)
from mhp_keras.data.pipeline import decode_image_file, make_dataset
from mhp_keras.serving.export import export_saved_model
from mhp_keras.serving.predict import predict

S = 16  # every file is S x S, and the pipeline's resize to S x S leaves the pixels unchanged
_Y, _X = np.mgrid[0:S, 0:S]


def rgb8(offset=0):
    """Smooth colour gradients (lossy codecs keep them close); `offset` makes another picture."""
    r = _X * 255 // (S - 1)
    g = _Y * 255 // (S - 1)
    b = 255 - (_X + _Y) * 255 // (2 * S - 2)
    return ((np.stack([r, g, b], -1) + offset) % 256).astype(np.uint8)


def grey8():
    return ((_X + _Y) * 255 // (2 * S - 2)).astype(np.uint8)


def grey16():
    # Values that are not multiples of 257, so a decoder keeping 8 bits would be caught.
    return ((_X * S + _Y) * 65535 // (S * S - 1) ^ 0x5A).astype(np.uint16)


def rgb16():
    return np.stack([grey16(), grey16()[::-1], grey16().T], -1)


def palette_image():
    """A 4-colour palette picture in 4 x 4 blocks, and its RGB pixels."""
    colours = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [250, 250, 90]], np.uint8)
    index = ((_X // 4 + _Y // 4) % 4).astype(np.uint8)
    image = Image.fromarray(index, "P")
    image.putpalette(colours.ravel().tolist())
    return image, colours[index]


def write_tiff16_rgb(path, pixels, byteorder="<"):
    """An uncompressed 16-bit RGB baseline TIFF, written by hand: Pillow cannot write one."""
    h, w, c = pixels.shape
    data = pixels.astype(byteorder + "u2").tobytes()
    n = 10
    bits_at = 8 + 2 + 12 * n + 4
    data_at = bits_at + 2 * c
    entries = [  # (tag, type: 3 = SHORT, 4 = LONG, count, value or offset)
        (256, 3, 1, w),
        (257, 3, 1, h),
        (258, 3, c, bits_at),  # BitsPerSample, three values: stored at bits_at
        (259, 3, 1, 1),  # no compression
        (262, 3, 1, 2),  # RGB
        (273, 4, 1, data_at),
        (277, 3, 1, c),
        (278, 3, 1, h),
        (279, 4, 1, len(data)),
        (284, 3, 1, 1),  # interleaved
    ]
    out = (b"II*\x00" if byteorder == "<" else b"MM\x00*") + struct.pack(byteorder + "I", 8)
    out += struct.pack(byteorder + "H", n)
    for tag, kind, count, value in entries:
        inline = kind == 3 and count == 1
        field = (
            struct.pack(byteorder + "HH", value, 0)
            if inline
            else struct.pack(byteorder + "I", value)
        )
        out += struct.pack(byteorder + "HHI", tag, kind, count) + field
    out += struct.pack(byteorder + "I", 0) + struct.pack(byteorder + "3H", 16, 16, 16) + data
    path.write_bytes(out)


def _tiff16_rgb(byteorder):
    def write(path):
        write_tiff16_rgb(path, rgb16(), byteorder)

    return write


def _save(pixels, **kwargs):
    def write(path):
        Image.fromarray(pixels).save(path, **kwargs)

    return write


def _save_cmyk(path):
    # Pillow's RGB -> CMYK is C = 255 - R, ..., K = 0, so the file holds rgb8() in CMYK.
    Image.fromarray(rgb8()).convert("CMYK").save(path, quality=95)


def _save_pages(fmt, **kwargs):
    def write(path):
        pages = [Image.fromarray(rgb8(offset)) for offset in (0, 80, 160)]
        pages[0].save(path, format=fmt, save_all=True, append_images=pages[1:], **kwargs)

    return write


def _save_palette(fmt):
    def write(path):
        palette_image()[0].save(path, format=fmt)

    return write


def _save_animated_gif(path):
    first, _ = palette_image()
    second = first.point(lambda i: (i + 1) % 4)
    first.save(path, save_all=True, append_images=[second], duration=100)


def _float(pixels):
    return pixels.astype(np.float64) / (255 if pixels.dtype == np.uint8 else 65535)


class Case(NamedTuple):
    file: str  # its name, in the extension's usual or upper case
    write: Callable  # writes the file at a path
    pixels: np.ndarray  # what the file holds (its first page or frame), uint8 or uint16 [h, w, c]
    tolerance: tuple | None = None  # a lossy codec's (max, mean) error in 8-bit levels
    host: bool = False  # decoded on the host (Pillow) rather than in the graph
    pages: int = 1


JPEG_ERROR = (8, 3)  # smooth grey, quality 95
CHROMA_ERROR = (24, 4)  # colour edges lose more to 4:2:0 chroma subsampling
FORMATS = {
    "png_8bit_rgb": Case("png8.png", _save(rgb8()), rgb8()),
    "png_16bit_grey": Case("png16.png", _save(grey16()), grey16()[..., None]),
    "jpeg_grey": Case("grey.jpg", _save(grey8(), quality=95), grey8()[..., None], JPEG_ERROR),
    "jpeg_rgb": Case("rgb.jpeg", _save(rgb8(), quality=95), rgb8(), CHROMA_ERROR),
    "jpeg_cmyk": Case("cmyk.jpg", _save_cmyk, rgb8(), JPEG_ERROR),
    "bmp_rgb": Case("rgb.bmp", _save(rgb8()), rgb8()),
    "bmp_grey": Case("grey.bmp", _save(grey8()), grey8()[..., None]),
    "bmp_palette": Case("palette.bmp", _save_palette("BMP"), palette_image()[1], host=True),
    "tiff_8bit_grey": Case("grey8.tif", _save(grey8()), grey8()[..., None], host=True),
    "tiff_8bit_rgb_lzw": Case(
        "rgb8.tiff", _save(rgb8(), compression="tiff_lzw"), rgb8(), host=True
    ),
    "tiff_16bit_grey": Case("grey16.tif", _save(grey16()), grey16()[..., None], host=True),
    "tiff_16bit_rgb": Case("rgb16.tif", _tiff16_rgb("<"), rgb16(), host=True),
    "tiff_16bit_rgb_big_endian": Case("rgb16be.tif", _tiff16_rgb(">"), rgb16(), host=True),
    "tiff_multipage": Case("pages.tif", _save_pages("TIFF"), rgb8(), host=True, pages=3),
    "webp_lossless": Case("lossless.webp", _save(rgb8(), lossless=True), rgb8(), host=True),
    "webp_lossy": Case("lossy.webp", _save(rgb8(), quality=95), rgb8(), CHROMA_ERROR, host=True),
    "webp_animated": Case(
        "anim.webp", _save_pages("WEBP", lossless=True), rgb8(), host=True, pages=3
    ),
    "gif": Case("palette.gif", _save_palette("GIF"), palette_image()[1]),
    "gif_animated": Case("anim.gif", _save_animated_gif, palette_image()[1], pages=2),
    "upper_case_tif": Case("UPPER.TIF", _save(rgb8()), rgb8(), host=True),
    "upper_case_jpg": Case("UPPER.JPG", _save(grey8(), quality=95), grey8()[..., None], JPEG_ERROR),
}


def write_format(folder, name):
    path = folder / FORMATS[name].file
    FORMATS[name].write(path)
    return str(path)


def assert_pixels(actual, name):
    """`actual` (floats in [0, 1], RGB) holds the pixels FORMATS[name] was written from.

    Compared in RGB, where grey is repeated exactly (a grey dataset's conversion, the luma
    weights of `tf.image.rgb_to_grayscale`, sums to 0.9999, so it would scale grey by that).
    """
    tolerance = FORMATS[name].tolerance
    expected = _float(FORMATS[name].pixels) * np.ones(3)
    assert actual.shape == expected.shape
    if tolerance is None:
        np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-6)
    else:
        error = np.abs(actual - expected) * 255
        assert error.max() <= tolerance[0] and error.mean() <= tolerance[1], (
            error.max(),
            error.mean(),
        )


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_training_pipeline_decodes_the_known_pixels(tmp_path, name, caplog):
    path = write_format(tmp_path, name)
    case = FORMATS[name]
    assert list_image_files(str(tmp_path)) == [path]  # listed, whatever the extension's case
    assert file_needs_host_decoding(path) == case.host
    with caplog.at_level(logging.WARNING):
        assert validate_image_files([path], "error") == [path]
    assert (os.path.basename(path) in caplog.text) == (case.pages > 1)
    ds = make_dataset(
        ImageSet(labels=[0], ids=["x"], paths=[path]),
        channels=3,
        image_size=S,
        batch_size=1,
        training=False,
    )
    assert_pixels(next(iter(ds))["image"].numpy()[0], name)


@pytest.mark.parametrize("channels", [1, 3])
def test_host_and_graph_decoders_agree(tmp_path, channels):
    """The same pixels as a TIFF (host) and a PNG (graph), mixed in one pipeline; 8 and 16 bit."""
    paths = []
    for name, pixels in [("a", rgb8()), ("b", grey8()), ("c", grey16())]:
        for ext in ("png", "tif"):
            paths.append(str(tmp_path / f"{name}.{ext}"))
            Image.fromarray(pixels).save(paths[-1])
    ds = make_dataset(
        ImageSet(labels=[0] * len(paths), ids=paths, paths=paths),
        channels=channels,
        image_size=S,
        batch_size=len(paths),
        training=False,
    )
    images = next(iter(ds))["image"].numpy()
    for png, tif in zip(images[::2], images[1::2], strict=True):
        # Within float32 rounding: TF itself scales 8-bit PNG (via 16 bit) and BMP differently.
        np.testing.assert_allclose(tif, png, rtol=0, atol=1e-6)


# -- mhp-predict -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    """An exported RGB model, a folder of every format, and predict's rows for it."""
    root = tmp_path_factory.mktemp("formats")
    folder = root / "images"
    folder.mkdir()
    paths = {name: write_format(folder, name) for name in FORMATS}
    model = tiny_conad(seed=0, channels=3)
    version_dir = export_saved_model(model, str(root / "export"))
    summary = predict(version_dir, str(folder), str(root / "out"), batch_size=8, progress=False)
    with open(summary["scores_csv"]) as f:
        rows = {os.path.basename(r["path"]): r for r in csv.DictReader(f)}
    return {
        "paths": paths,
        "rows": rows,
        "summary": summary,
        "version_dir": version_dir,
        "model": model,
    }


def _reference_score(model, path):
    """The model's score of the pixels training decodes from `path`, rounded to 8 bits where
    mhp-predict decodes on the host (serving_default takes uint8)."""
    host = file_needs_host_decoding(path)
    decoded = decode_image_file(tf.constant(path), 3, host).numpy()
    if host:
        decoded = (np.round(decoded.astype(np.float64) * 255) / 255).astype(np.float32)
    return float(model.analyze(decoded[None])["anomaly_score"][0])


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_predict_scores_each_format_as_training_decodes_it(predicted, name):
    row = predicted["rows"][os.path.basename(predicted["paths"][name])]
    assert row["error"] == ""
    reference = _reference_score(predicted["model"], predicted["paths"][name])
    assert float(row["score"]) == pytest.approx(reference, rel=1e-4, abs=1e-3)


def test_predict_scores_every_format_and_warns_about_extra_pages(predicted, tmp_path, caplog):
    assert predicted["summary"]["images"] == len(FORMATS)
    assert predicted["summary"]["failed"] == []
    with caplog.at_level(logging.WARNING):
        predict(
            predicted["version_dir"],
            predicted["paths"]["tiff_multipage"],
            str(tmp_path),
            heatmaps=False,
            progress=False,
        )
    assert "pages.tif holds 3 pages or frames; only the first is used" in caplog.text


def test_predict_sends_16_bit_pixels_as_round_v_times_255_over_65535(predicted):
    """The documented 16-bit to uint8 mapping of mhp-predict's host path."""
    expected = np.round(rgb16().astype(np.float64) * 255 / 65535).astype(np.uint8)
    serving = tf.saved_model.load(predicted["version_dir"]).signatures["serving_default"]
    score = float(serving(images=tf.constant(expected[None]))["anomaly_score"][0])
    row = predicted["rows"]["rgb16.tif"]
    assert float(row["score"]) == pytest.approx(score, rel=1e-6)

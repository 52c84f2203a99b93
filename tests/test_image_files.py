"""Image-file checks shared by the file-based loaders, the choice between the graph and the host
decoder, and the pipeline's decoding of every kind of accepted file (grey, RGB, RGBA, 16-bit, mixed
sizes and decoders) and its training crops and tiles. tests/test_formats.py checks each format's
pixel values."""

import logging
import os

import numpy as np
import pytest
from PIL import Image

from mhp_keras.config.defaults import base_config
from mhp_keras.data.base import ImageSet
from mhp_keras.data.image_files import (
    UnsupportedImage,
    decode_on_host,
    file_needs_host_decoding,
    image_problem,
    list_files,
    list_image_files,
    needs_host_decoding,
    validate_image_files,
)
from mhp_keras.data.pipeline import dataset_for_split, make_dataset
from mhp_keras.errors import ConfigError, DataError


def save(path, array, mode=None, **kwargs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.fromarray(array, mode) if mode else Image.fromarray(array)
    image.save(path, **kwargs)
    return str(path)


def ramp(h, w, channels=0, dtype=np.uint8):
    top = 255 if dtype == np.uint8 else 65535
    a = np.linspace(0, top, h * w).reshape(h, w).astype(dtype)
    return np.repeat(a[..., None], channels, -1) if channels else a


def truncated_png(path):
    save(path, ramp(32, 32, 3))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return str(path)


def text_file(path):
    path.write_text("not an image")
    return str(path)


def ppm_file(path):
    return save(path, ramp(8, 8, 3), format="PPM")


def float_tiff(path):
    return save(path, ramp(8, 8).astype(np.float32) / 255, "F", format="TIFF")


@pytest.fixture
def good_files(tmp_path):
    """One file of every accepted kind, in mixed sizes."""
    d = tmp_path / "good"
    return [
        save(d / "a_grey.png", ramp(20, 30)),
        save(d / "b_rgb.PNG", ramp(40, 24, 3)),
        save(d / "c_rgba.png", np.dstack([ramp(16, 16, 3), np.full((16, 16), 128, np.uint8)])),
        save(d / "d_16bit.png", ramp(24, 24, dtype=np.uint16)),
        save(d / "e_rgb.jpg", ramp(33, 17, 3), quality=95),
        save(d / "f_grey.JPEG", ramp(18, 18)),
        save(d / "g_rgb.bmp", ramp(12, 40, 3)),
        save(d / "h_grey.bmp", ramp(16, 16)),
        save(d / "i_greyalpha.png", np.dstack([ramp(16, 16), ramp(16, 16)]), "LA"),
        # Decoded on the host, in the same pipeline as the rest:
        save(d / "j_16bit.TIF", ramp(24, 24, dtype=np.uint16)),
        save(d / "k_rgba.webp", np.dstack([ramp(16, 20, 3), ramp(16, 20)]), lossless=True),
        save(d / "l_1bit.bmp", ramp(16, 16) > 100),
    ]


def test_listing_is_sorted_case_insensitive_and_skips_hidden(tmp_path):
    names = ["b.PNG", "a.jpeg", "c.Bmp", "d.txt", "e.TIFF", "f.tif", "g.WebP", "h.gif", "i.ppm"]
    for name in [*names, ".DS_Store", "Thumbs.db"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    assert [os.path.basename(p) for p in list_files(str(tmp_path))] == sorted(names)
    assert [os.path.basename(p) for p in list_image_files(str(tmp_path))] == [
        "a.jpeg",
        "b.PNG",
        "c.Bmp",
        "e.TIFF",
        "f.tif",
        "g.WebP",
        "h.gif",
    ]


def test_every_accepted_kind_validates(good_files):
    assert [image_problem(p) for p in good_files] == [None] * len(good_files)
    assert validate_image_files(good_files, "error") == good_files


@pytest.mark.parametrize(
    "make, expected",
    [
        (truncated_png, "not a readable image"),
        (text_file, "not a readable image"),
        (ppm_file, "a PPM image"),
        (float_tiff, "a floating-point image"),
    ],
    ids=["truncated", "text_as_png", "ppm_as_png", "float_tiff"],
)
def test_bad_content_raises_naming_the_file(tmp_path, make, expected):
    path = make(tmp_path / "bad.png")
    with pytest.raises(DataError, match=expected) as err:
        validate_image_files([path], "error")
    assert path in str(err.value)
    assert "on_bad_file=skip" in str(err.value)


@pytest.mark.parametrize("make, name", [(ppm_file, "picture.ppm"), (text_file, "notes.txt")])
def test_unsupported_extension_raises(tmp_path, make, name):
    path = make(tmp_path / name)
    with pytest.raises(DataError, match="unsupported file type") as err:
        validate_image_files([path], "error")
    assert path in str(err.value) and ".png" in str(err.value)


def test_bmp_variants_tensorflow_would_misread_are_decoded_on_the_host(tmp_path):
    variants = {
        "one_bit": Image.fromarray(ramp(8, 10) > 128),
        "palette": Image.fromarray(ramp(8, 10, 3)).convert("P", palette=Image.Palette.ADAPTIVE),
    }
    for name, image in variants.items():
        path = str(tmp_path / f"{name}.bmp")
        image.save(path)
        assert file_needs_host_decoding(path), name
        assert image_problem(path) is None
        pixels, frames = decode_on_host(path)
        with Image.open(path) as reference:
            mode = "L" if reference.mode in ("1", "L") else "RGB"
            expected = np.asarray(reference.convert(mode), np.float32).reshape(pixels.shape) / 255
        np.testing.assert_allclose(pixels, expected, atol=1e-6)
        assert frames == 1


def test_which_files_need_the_host_decoder(tmp_path):
    def header(name, array, mode=None, **kwargs):
        path = save(tmp_path / name, array, mode, **kwargs)
        with open(path, "rb") as f:
            return needs_host_decoding(f.read(2048))

    assert not header("grey.bmp", ramp(8, 8))  # TF reads it: the palette is the grey ramp
    assert not header("rgb.bmp", ramp(8, 8, 3))
    assert not header("rgba.bmp", np.dstack([ramp(8, 8, 3), ramp(8, 8)]))
    assert not header("a.png", ramp(8, 8, 3)) and not header("b.jpg", ramp(8, 8))
    assert not header("c.gif", ramp(8, 8, 3))
    assert header("d.tif", ramp(8, 8)) and header("e.tif", ramp(8, 8), compression="tiff_lzw")
    assert header("f.webp", ramp(8, 8, 3), lossless=True)
    assert not needs_host_decoding(b"")  # unknown: the graph decoder's error names the problem
    assert needs_host_decoding(b"BM")  # a cut-off BMP header: Pillow's error says more
    assert needs_host_decoding(b"MM\x00*" + bytes(100))


@pytest.mark.parametrize("byteorder", ["<", ">"])
@pytest.mark.parametrize("compression", [None, "zlib", "lzw"])
def test_16_bit_colour_tiff_keeps_every_bit(tmp_path, byteorder, compression):
    """Pillow alone reads 16-bit colour TIFFs as 8 bit; decode_on_host reads them with tifffile,
    uncompressed, deflate- and LZW-compressed (with the horizontal predictor) alike; LZW through
    imagecodecs, an install requirement."""
    tifffile = pytest.importorskip("tifffile")  # Pillow cannot write 16-bit colour TIFFs
    pixels = np.random.default_rng(0).integers(0, 65536, (9, 11, 4), dtype=np.uint16)
    path = str(tmp_path / "wide.tif")
    extra = {"predictor": 2} if compression else {}
    tifffile.imwrite(
        path,
        pixels,
        photometric="rgb",
        extrasamples=["unassalpha"],
        compression=compression,
        byteorder=byteorder,
        **extra,
    )
    decoded, frames = decode_on_host(path)
    np.testing.assert_array_equal(np.round(decoded * 65535).astype(np.uint16), pixels)
    assert decoded.dtype == np.float32 and frames == 1


def test_planar_16_bit_colour_tiff_keeps_every_bit(tmp_path):
    """One plane per sample (PlanarConfiguration 2), which Pillow reads wrongly even at 8 bit."""
    tifffile = pytest.importorskip("tifffile")
    pixels = np.random.default_rng(1).integers(0, 65536, (7, 5, 3), dtype=np.uint16)
    path = str(tmp_path / "planar.tif")
    tifffile.imwrite(path, pixels.transpose(2, 0, 1), photometric="rgb", planarconfig="separate")
    decoded, _ = decode_on_host(path)
    np.testing.assert_array_equal(np.round(decoded * 65535).astype(np.uint16), pixels)


def test_16_bit_colour_tiff_tifffile_cannot_decode_names_the_missing_codec(tmp_path):
    """A compression tifffile needs imagecodecs for (here LZW: a deflate file relabelled, since
    tifffile cannot write LZW without it either) is a problem of the file, not a traceback."""
    tifffile = pytest.importorskip("tifffile")
    try:
        import imagecodecs  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("imagecodecs is installed: tifffile decodes LZW")
    path = str(tmp_path / "lzw.tif")
    pixels = np.zeros((4, 4, 3), dtype=np.uint16)
    tifffile.imwrite(path, pixels, photometric="rgb", compression="zlib", byteorder="<")
    with tifffile.TiffFile(path) as tiff:
        offset = tiff.pages[0].tags["Compression"].offset
    with open(path, "r+b") as f:
        f.seek(offset + 8)  # the tag's value field: 2-byte tag, 2-byte type, 4-byte count
        f.write((5).to_bytes(2, "little"))
    with pytest.raises(UnsupportedImage, match="16-bit colour TIFF.*pip install imagecodecs"):
        decode_on_host(path)
    assert "tifffile cannot decode" in image_problem(path)


def test_images_without_a_fixed_range_are_unsupported(tmp_path):
    path = float_tiff(tmp_path / "float.tif")
    with pytest.raises(UnsupportedImage, match="floating-point"):
        decode_on_host(path)
    assert "Re-save it as 8 or 16 bit" in image_problem(path)


def test_skip_logs_each_bad_file_and_the_count(tmp_path, good_files, caplog):
    bad = [truncated_png(tmp_path / "t.png"), text_file(tmp_path / "x.txt")]
    with caplog.at_level(logging.WARNING):
        kept = validate_image_files(good_files[:2] + bad, "skip")
    assert kept == good_files[:2]
    text = caplog.text
    assert all(p in text for p in bad)
    assert "Skipped 2 of 4 image files" in text


def test_unknown_on_bad_file_is_a_config_error(good_files):
    with pytest.raises(ConfigError, match="data.on_bad_file='ignore'"):
        validate_image_files(good_files, "ignore")


@pytest.mark.parametrize("channels", [1, 3])
def test_pipeline_decodes_all_kinds_to_one_shape(good_files, channels):
    config = base_config()
    config.data.image_size = 16
    config.data.channels = channels
    config.data.batch_size = 4
    images = ImageSet(labels=np.zeros(len(good_files)), ids=good_files, paths=good_files)
    rows = list(dataset_for_split(images, config, training=False).unbatch().as_numpy_iterator())
    x = np.stack([r["image"] for r in rows])
    assert x.shape == (len(good_files), 16, 16, channels)
    assert x.dtype == np.float32 and x.min() >= 0.0 and x.max() <= 1.0
    # Every file is a ramp from 0 to the maximum: 16-bit scales to [0, 1] like 8-bit.
    assert np.all(x.reshape(len(x), -1).max(axis=1) > 0.8)
    assert np.all(x.reshape(len(x), -1).min(axis=1) < 0.2)
    eight = good_files.index(next(p for p in good_files if "h_grey" in p))
    for sixteen in ("d_16bit.png", "j_16bit.TIF"):
        index = good_files.index(next(p for p in good_files if p.endswith(sixteen)))
        np.testing.assert_allclose(x[index], x[eight], atol=0.02)
    assert np.all(np.stack([r["mask"] for r in rows]) == 0)


def _train_batches(images, crop, size=8, **kwargs):
    ds = make_dataset(
        images,
        channels=1,
        image_size=size,
        batch_size=64,
        training=True,
        seed=3,
        crop=crop,
        **kwargs,
    )
    return [b.numpy() for b in ds]


def test_tiles_cover_each_image_on_a_centred_grid():
    # 2 images: 20x35 -> a 2x4 grid of 8x8 tiles; 5x5 -> too small, resized whole.
    big = np.arange(20 * 35, dtype=np.float32).reshape(20, 35, 1) / (20 * 35)
    small = np.full((5, 5, 1), 0.5, np.float32)
    tiles = []
    for images in (big[None], small[None]):
        (batch,) = _train_batches(ImageSet(labels=[0], ids=["a"], images=images), "tile")
        tiles.append(batch)
    assert tiles[0].shape == (8, 8, 8, 1) and tiles[1].shape == (1, 8, 8, 1)
    top, left = (20 - 16) // 2, (35 - 32) // 2
    expected = {
        big[top + r * 8 : top + r * 8 + 8, left + c * 8 : left + c * 8 + 8].tobytes()
        for r in range(2)
        for c in range(4)
    }
    assert {t.tobytes() for t in tiles[0]} == expected
    np.testing.assert_allclose(tiles[1], 0.5)


def test_random_crops_change_every_epoch_and_repeat_with_the_seed():
    rng = np.random.default_rng(0)
    images = ImageSet(labels=[0, 0], ids=["a", "b"], images=rng.random((2, 32, 48, 1), np.float32))
    ds = make_dataset(
        images, channels=1, image_size=8, batch_size=2, training=True, seed=3, crop="random"
    )
    epoch1, epoch2 = (next(iter(ds)).numpy() for _ in range(2))
    assert epoch1.shape == (2, 8, 8, 1) and epoch1.min() >= 0 and epoch1.max() <= 1
    assert not np.array_equal(epoch1, epoch2)
    again = make_dataset(
        images, channels=1, image_size=8, batch_size=2, training=True, seed=3, crop="random"
    )
    np.testing.assert_array_equal(next(iter(again)).numpy(), epoch1)


def test_crops_never_apply_to_evaluation_and_bad_modes_raise():
    images = ImageSet(labels=[0], ids=["a"], images=np.ones((1, 32, 32, 1), np.float32))
    for crop in ("random", "tile"):
        ds = make_dataset(images, channels=1, image_size=8, batch_size=4, training=False, crop=crop)
        assert next(iter(ds))["image"].shape == (1, 8, 8, 1)
    with pytest.raises(ConfigError, match="data.crop='zoom'"):
        _train_batches(images, "zoom")
    with pytest.raises(ConfigError, match="crop_fraction=1.5"):
        _train_batches(images, "random", crop_fraction=1.5)


def test_grey_files_stay_exactly_grey_in_a_grey_dataset():
    import tensorflow as tf

    from mhp_keras.data.pipeline import convert_channels

    grey_alpha = np.random.default_rng(3).random((5, 4, 2)).astype(np.float32)
    out = convert_channels(tf.constant(grey_alpha), 1)
    np.testing.assert_array_equal(out.numpy(), grey_alpha[..., :1])
    # Through a traced function, where the channel count is unknown until run time.
    traced = tf.function(lambda x: convert_channels(x, 1))
    spec = tf.TensorSpec([None, None, None], tf.float32)
    np.testing.assert_array_equal(
        traced.get_concrete_function(spec)(tf.constant(grey_alpha)).numpy(), grey_alpha[..., :1]
    )

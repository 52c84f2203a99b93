"""Finding, checking and (for the formats TensorFlow cannot read) decoding image files, for the
file-based datasets (class folders, normal folders, MVTec AD) and for `mhp-predict`.

The tf.data pipeline decodes files lazily, so a corrupt or unsupported file would otherwise stop
training minutes in, with a TensorFlow traceback that does not name the file. Every file-based
loader therefore lists its files here and checks each one first: a bad file is reported up front
as a `DataError` naming it (`data.on_bad_file="error"`), or logged and dropped
(`data.on_bad_file="skip"`).

Accepted are the extensions in IMAGE_EXTENSIONS, in any case (.TIF, .JPG, ...); the decoders go by
the content, not the extension. Two decoders share the work, chosen per file from its first bytes
by `needs_host_decoding`, the same rule in the training pipeline and in `mhp-predict`:

* In the graph (`tf.io.decode_image` with a float32 result, as the pipeline and the exported
  `serving_bytes` signature call it; no Python per image): PNG (any bit depth, grey, grey +
  alpha, palette, RGB, RGBA), JPEG (grey, RGB and CMYK: TF 2.21 and Pillow both convert CMYK with
  the Adobe inverted convention, without the embedded ICC profile, and agree within 2 levels),
  GIF (the first frame) and the BMPs TF reads correctly (uncompressed 8-bit grey, 24, 32 bit).
* On the host (`decode_on_host`, Pillow): TIFF (TF has no decoder; 8 or 16 bit, grey or RGB(A),
  any compression Pillow's libtiff reads; 16-bit colour through tifffile, as Pillow reads only
  its high bytes, with the codecs of imagecodecs, an install requirement, for LZW, JPEG and
  the other compressions), WebP (TF 2.21 refuses it for a float32 result, "WebP
  only supports uint8 for dtype", and its uint8 decoder corrupts memory and aborts the process on
  animated WebP) and the BMPs TF would misread (palette colours, 1/4/16 bit, RLE, OS/2 headers,
  unusual channel masks).

Both give float32 in [0, 1], 8 bit scaled by 1/255 and 16 bit by 1/65535, so the same pixels
decode to the same values (within float32 rounding) whichever decoder reads them. A file with
several pages or frames (multi-page TIFF, animated GIF or WebP) is read as its first, with a
warning naming it. Channels and sizes may be mixed within a dataset: the pipeline converts every
image to `data.channels` and resizes it to `data.image_size`.
"""

from __future__ import annotations

import concurrent.futures
import os
import struct
from typing import BinaryIO

import numpy as np
import tifffile
from absl import logging
from PIL import Image

from mhp_keras.errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")
ON_BAD_FILE = ("error", "skip")
# Content formats as Pillow names them. MPO is how Pillow names a camera JPEG holding extra
# (e.g. preview) pictures; TF reads its first, the main image.
GRAPH_FORMATS = ("PNG", "JPEG", "MPO", "GIF", "BMP")
HOST_FORMATS = ("TIFF", "WEBP", "BMP")
FORMAT_NAMES = "PNG, JPEG, BMP, GIF, WebP or TIFF"
# Enough of a file for `needs_host_decoding`: a BMP's headers and its full 256-colour palette.
HEADER_BYTES = 2048
# Operating-system clutter that is never an image and never worth an error.
_IGNORED_NAMES = ("thumbs.db", "desktop.ini")
# Every TIFF byte-order mark Pillow opens (classic and BigTIFF, and two non-standard ones).
_TIFF_MAGIC = (b"MM\x00*", b"II*\x00", b"MM*\x00", b"II\x00*", b"MM\x00+", b"II+\x00")
# The channel masks of the only 32-bit BI_BITFIELDS layout TF decodes correctly (B, G, R, X).
_BMP_STANDARD_MASKS = (0x00FF0000, 0x0000FF00, 0x000000FF)
# Pillow modes that are 16-bit grey; all other integer and float modes have no fixed [0, 1] scale.
_GREY16_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_SCALE = {np.dtype(np.uint8): np.float32(1 / 255), np.dtype(np.uint16): np.float32(1 / 65535)}


class UnsupportedImage(DataError):
    """A file Pillow reads but whose pixels have no [0, 1] meaning here (float, 32-bit, ...)."""


def is_image_file(path: str) -> bool:
    """Whether the name ends in a supported image extension (case-insensitive)."""
    return path.lower().endswith(IMAGE_EXTENSIONS)


def list_files(folder: str) -> list[str]:
    """Every regular file in `folder` (not recursive), sorted by name.

    Hidden files (".DS_Store", "._x.png", ...) and Windows' thumbs.db/desktop.ini are left out;
    anything else is returned, so `validate_image_files` can report files of unsupported types.
    """
    names = sorted(
        name
        for name in os.listdir(folder)
        if not name.startswith(".") and name.lower() not in _IGNORED_NAMES
    )
    return [os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))]


def list_image_files(folder: str) -> list[str]:
    """The files in `folder` with a supported image extension (IMAGE_EXTENSIONS), sorted."""
    return [p for p in list_files(folder) if is_image_file(p)]


def list_subfolders(folder: str) -> list[str]:
    """Names of the non-hidden subfolders of `folder`, sorted."""
    return sorted(
        n
        for n in os.listdir(folder)
        if not n.startswith(".") and os.path.isdir(os.path.join(folder, n))
    )


def check_data_root(root: str, name: str, expected: str) -> None:
    """`data.root` of a file-based dataset (`data.name=name`) is set and is a folder.

    `expected` says what the folder should be, e.g. "a folder holding train/<class>/ ...".
    """
    if not root:
        raise ConfigError(
            f"data.root is not set: for data.name={name}, point --config.data.root at {expected}."
        )
    if not os.path.isdir(root):
        raise DataError(
            f"data.root={root!r} does not exist (or is not a folder): expected {expected}."
        )


# -- which decoder ---------------------------------------------------------------------------------


def _bmp_needs_host(header: bytes) -> bool:
    """Whether TF's BMP decoder would fail on or misread this BMP (from its first bytes).

    TF reads the pixel array of uncompressed 8, 24 and 32 bit BMPs and ignores palettes, so an
    8-bit BMP is right only when its palette maps every index to that grey level.
    The header is parsed here, not by Pillow, which does not expose the channel masks it reads.
    """
    if len(header) < 54:
        return True
    dib, bits, compression = (
        struct.unpack_from("<I", header, 14)[0],
        struct.unpack_from("<H", header, 28)[0],
        struct.unpack_from("<I", header, 30)[0],
    )
    if dib < 40 or bits not in (8, 24, 32) or compression not in (0, 3):
        return True  # an OS/2 header, 1/4/16 bit, RLE or embedded JPEG/PNG
    if compression == 3:
        masks = struct.unpack_from("<3I", header, 54) if len(header) >= 66 else None
        if bits != 32 or masks != _BMP_STANDARD_MASKS:
            return True
    if bits == 8:
        colours = struct.unpack_from("<I", header, 46)[0] or 256
        table = header[14 + dib : 14 + dib + 4 * colours]
        if colours > 256 or len(table) < 4 * colours:
            return True
        return any(table[4 * i : 4 * i + 3] != bytes((i, i, i)) for i in range(colours))
    return False


def needs_host_decoding(header: bytes) -> bool:
    """Whether a file whose first bytes are `header` (HEADER_BYTES of them, or the whole file if
    shorter) must be decoded by `decode_on_host` rather than by TF in the graph.
    Magic bytes are compared here rather than by a sniffing package: three formats, no dependency.

    Anything not recognised here goes to the graph, whose error then names the problem.
    """
    if header[:4] in _TIFF_MAGIC:
        return True
    if header[:4] == b"RIFF" and header[8:12] == b"WEBP":
        return True
    if header[:2] == b"BM":
        return _bmp_needs_host(header)
    return False


def file_needs_host_decoding(path: str) -> bool:
    """`needs_host_decoding` for a file; False if it cannot be read (the graph decoder then
    reports the file)."""
    try:
        with open(path, "rb") as f:
            return needs_host_decoding(f.read(HEADER_BYTES))
    except OSError:
        return False


# -- host decoding ---------------------------------------------------------------------------------


def _wide_colour_tiff(image: Image.Image, source) -> np.ndarray | None:
    """A 16-bit colour TIFF's exact uint16 pixels [h, w, c], or None if `image` is not one.

    Pillow has no 16-bit colour mode: it unpacks each sample's high byte into an 8-bit RGB(A)
    image (and misreads planar files). tifffile reads the first page's full 16 bits instead.
    """
    bits = image.tag_v2.get(258, ()) if image.format == "TIFF" else ()
    if image.mode not in ("RGB", "RGBA", "RGBX") or set(bits) != {16}:
        return None
    if not isinstance(source, str | os.PathLike):
        source.seek(0)
    try:
        with tifffile.TiffFile(source) as tiff:
            page = tiff.pages[0]
            pixels, axes = page.asarray(), page.axes
    except Exception as e:  # noqa: BLE001 - tifffile raises many types (KeyError for codecs, ...)
        codec = "; pip install imagecodecs adds its compression" if "imagecodecs" in str(e) else ""
        raise UnsupportedImage(
            f"a 16-bit colour TIFF that tifffile cannot decode ({type(e).__name__}: {e}{codec}); "
            "expected one tifffile reads, e.g. re-saved uncompressed or with deflate compression"
        ) from None
    if axes.startswith("S"):  # planar configuration: one plane per sample
        pixels = np.moveaxis(pixels, 0, -1)
    if pixels.dtype != np.uint16 or pixels.ndim != 3:
        raise UnsupportedImage(
            f"a TIFF of {pixels.dtype} samples shaped {pixels.shape} ({axes}); expected 8 or "
            "16-bit unsigned grey or colour pixels"
        )
    return pixels


def _pixels(image: Image.Image, source) -> np.ndarray:
    """uint8 or uint16 [h, w, c] with c in {1, 2, 3, 4}: grey, grey + alpha, RGB or RGBA."""
    mode = image.mode
    wide = _wide_colour_tiff(image, source)
    if wide is not None:
        return wide
    if mode in _GREY16_MODES:
        return np.asarray(image).astype(np.uint16)[..., None]
    if mode in ("I", "F") or mode.startswith(("I;", "F;")):
        kind = "floating-point" if mode.startswith("F") else "32-bit or signed integer"
        raise UnsupportedImage(
            f"a {kind} image (Pillow mode {mode}), whose values have no fixed range; expected 8 or "
            "16 bits per channel. Re-save it as 8 or 16 bit"
        )
    if mode == "1":
        image = image.convert("L")
    elif mode == "La":
        image = image.convert("LA")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        image = image.convert("RGB")  # palette, CMYK, YCbCr, RGBX, RGBa, ...: alpha is unused
    array = np.asarray(image)
    return array[..., None] if array.ndim == 2 else array


def decode_on_host(source: str | os.PathLike | BinaryIO) -> tuple[np.ndarray, int]:
    """Decodes an image file with Pillow as the graph decoder would: (pixels, frames).

    `pixels` is float32 [h, w, c] in [0, 1] with the file's channels (c in {1, 2, 3, 4}; the caller
    converts them with `pipeline.convert_channels`), scaled like `tf.image.convert_image_dtype`:
    8-bit values times float32(1/255), 16-bit values times float32(1/65535). `frames` is the
    number of pages or frames; only the first is decoded. `source` is a path or a binary file.
    The training pipeline's host fallback and `mhp-predict` both decode through here.

    Raises `UnsupportedImage` for readable images without a [0, 1] scale (float or 32-bit TIFFs)
    and Pillow's own errors for unreadable files (see `decode_error_text`).
    """
    with Image.open(source) as image:
        if image.format not in GRAPH_FORMATS + HOST_FORMATS:
            raise UnsupportedImage(f"a {image.format} image; expected {FORMAT_NAMES}")
        if min(image.size) < 1:
            raise UnsupportedImage(f"an empty image of size {image.size}")
        frames = getattr(image, "n_frames", 1)
        image.seek(0)
        pixels = _pixels(image, source)
    return pixels.astype(np.float32) * _SCALE[pixels.dtype], frames


def decode_error_text(error: Exception) -> str:
    """What `decode_on_host` or Pillow's loading raised, as the problem with the file."""
    if isinstance(error, UnsupportedImage):
        return str(error)
    # Pillow raises many types (OSError, SyntaxError, ValueError, struct.error, ...).
    return f"not a readable image ({type(error).__name__}: {error})"


def warn_first_frame(path: str, frames: int) -> None:
    """Logs that only the first of a file's pages or frames is used (nothing for one)."""
    if frames > 1:
        logging.warning(
            "%s holds %d pages or frames; only the first is used (save the others as files of "
            "their own to use them).",
            path,
            frames,
        )


# -- checking --------------------------------------------------------------------------------------


def inspect_image(path: str) -> tuple[str | None, int]:
    """(problem, frames): problem is None if `path` is an image the pipeline decodes, else what is
    wrong with it; frames counts its pages or frames.

    Files for the graph decoder are opened with Pillow (verify, then a full load, which catches
    truncated files); files for the host decoder are decoded with `decode_on_host` itself.
    """
    if not is_image_file(path):
        return f"unsupported file type (expected one of {', '.join(IMAGE_EXTENSIONS)})", 1
    try:
        with open(path, "rb") as f:
            header = f.read(HEADER_BYTES)
    except OSError as err:
        return f"not readable ({err.strerror})", 1
    try:
        if needs_host_decoding(header):
            return None, decode_on_host(path)[1]
        with Image.open(path) as image:
            image.verify()  # structure and checksums; the object is unusable afterwards
        with Image.open(path) as image:
            frames = getattr(image, "n_frames", 1)
            image.seek(0)
            image.load()  # the pixel data itself: catches truncated files
            fmt, size = image.format, image.size
    except Exception as err:  # noqa: BLE001 - every failure to read is a problem of the file
        return decode_error_text(err), 1
    if fmt not in GRAPH_FORMATS:
        return f"a {fmt} image, which the pipeline cannot decode (expected {FORMAT_NAMES})", frames
    if min(size) < 1:
        return f"an empty image of size {size}", frames
    return None, frames


def image_problem(path: str) -> str | None:
    """None if `path` is an image the pipeline can decode, else what is wrong with it."""
    return inspect_image(path)[0]


def validate_image_files(paths: list[str], on_bad_file: str, what: str = "image") -> list[str]:
    """The paths that hold decodable images; bad ones raise or are logged and dropped.

    Each file is checked by `inspect_image`. With `on_bad_file="error"` the first bad file (in
    path order) raises a DataError naming it and the problem; with "skip" each bad path is logged
    with its problem, then the count, and the rest are returned in order. A file of several pages
    or frames is logged as read by its first. `what` names the files in messages ("image", "mask").
    """
    # A public function, so the value is checked here too (config validation checks the config).
    if on_bad_file not in ON_BAD_FILE:
        raise ConfigError(
            f"data.on_bad_file={on_bad_file!r}: expected one of {list(ON_BAD_FILE)} ('error' stops "
            "at the first unreadable image file, 'skip' logs and leaves such files out)."
        )
    paths = list(paths)
    # Decoding releases the GIL, so threads speed up large datasets.
    workers = min(8, os.cpu_count() or 1, max(1, len(paths)))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(inspect_image, paths))
    kept = []
    skipped = 0
    for path, (problem, frames) in zip(paths, results, strict=True):
        if problem is None:
            kept.append(path)
            warn_first_frame(path, frames)
        elif on_bad_file == "error":
            raise DataError(
                f"Bad {what} file {path}: {problem}. Expected a readable {FORMAT_NAMES} image. "
                "Remove or replace the file, or set --config.data.on_bad_file=skip to leave bad "
                "files out."
            )
        else:
            skipped += 1
            logging.warning("Skipping bad %s file %s: %s.", what, path, problem)
    if skipped:
        logging.warning(
            "Skipped %d of %d %s files (data.on_bad_file=skip).", skipped, len(paths), what
        )
    return kept


def image_size(path: str) -> tuple[int, int]:
    """(width, height) of an image file, read from its header only."""
    with Image.open(path) as image:
        return image.size

"""Finding and checking image files for the file-based datasets (class folders, MVTec AD).

The tf.data pipeline decodes files lazily, so a corrupt or unsupported file would otherwise stop
training minutes in, with a TensorFlow traceback that does not name the file. Every file-based
loader therefore lists its files here and opens each one with Pillow first: a bad file is reported
up front as a `DataError` naming it (`data.on_bad_file="error"`), or logged and dropped
(`data.on_bad_file="skip"`).

Accepted are the files `tf.io.decode_image` decodes correctly: PNG (any bit depth, grey, grey +
alpha, palette, RGB, RGBA; 16-bit is scaled to [0, 1] by the pipeline), JPEG (grey or RGB) and
uncompressed BMP (8-bit grey, 24-bit RGB, 32-bit RGBA). Channels and sizes may be mixed within a
dataset: the pipeline converts every image to `data.channels` and resizes it to `data.image_size`.
"""

from __future__ import annotations

import concurrent.futures
import os
import struct

from absl import logging
from PIL import Image

from mhp_keras.errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
ON_BAD_FILE = ("error", "skip")
# Content formats (as Pillow names them) that the pipeline's decoder reads; the extension only
# picks the files, the decoder goes by content.
_DECODABLE_FORMATS = ("PNG", "JPEG", "BMP")
# Operating-system clutter that is never an image and never worth an error.
_IGNORED_NAMES = ("thumbs.db", "desktop.ini")


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
    """The files in `folder` with a supported image extension (.png .jpg .jpeg .bmp), sorted."""
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


def _bmp_problem(path: str, mode: str) -> str | None:
    """Why TensorFlow's BMP decoder would fail or mis-decode this BMP, or None if it reads it.

    TF reads uncompressed 8 (grey), 24 and 32 bit BMPs; it ignores palettes and compression.
    """
    with open(path, "rb") as f:
        header = f.read(34)
    if len(header) < 34 or struct.unpack("<I", header[14:18])[0] < 40:
        return "an old-style (OS/2) BMP header"
    bits = struct.unpack("<H", header[28:30])[0]
    compression = struct.unpack("<I", header[30:34])[0]
    if bits not in (8, 24, 32) or compression not in (0, 3):
        return f"a {bits}-bit BMP with compression type {compression}"
    if bits == 8 and mode != "L":
        return "an 8-bit BMP with a colour palette"
    return None


def image_problem(path: str) -> str | None:
    """None if `path` is an image the pipeline can decode, else what is wrong with it."""
    if not is_image_file(path):
        return f"unsupported file type (expected one of {', '.join(IMAGE_EXTENSIONS)})"
    try:
        with Image.open(path) as image:
            image.verify()  # structure and checksums; the object is unusable afterwards
        with Image.open(path) as image:
            image.load()  # the pixel data itself: catches truncated files
            fmt, mode, size = image.format, image.mode, image.size
    except Exception as err:  # Pillow raises many types (OSError, SyntaxError, ValueError, ...)
        return f"not a readable image ({type(err).__name__}: {err})"
    if fmt not in _DECODABLE_FORMATS:
        return f"a {fmt} image, which the pipeline cannot decode (expected PNG, JPEG or BMP)"
    if min(size) < 1:
        return f"an empty image of size {size}"
    if fmt == "JPEG" and mode not in ("L", "RGB"):
        return f"a {mode} JPEG (expected greyscale or RGB)"
    if fmt == "BMP":
        problem = _bmp_problem(path, mode)
        if problem:
            return f"{problem}, which TensorFlow cannot decode correctly; re-save it as PNG"
    return None


def validate_image_files(paths: list[str], on_bad_file: str, what: str = "image") -> list[str]:
    """The paths that hold decodable images; bad ones raise or are logged and dropped.

    Each file is opened with Pillow (verify, then a full load). With `on_bad_file="error"` the first
    bad file (in path order) raises a DataError naming it and the problem; with "skip" each bad
    path is logged with its problem, then the count, and the rest are returned in order. `what`
    names the files in messages ("image", "mask").
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
        problems = list(pool.map(image_problem, paths))
    kept = []
    skipped = 0
    for path, problem in zip(paths, problems, strict=True):
        if problem is None:
            kept.append(path)
        elif on_bad_file == "error":
            raise DataError(
                f"Bad {what} file {path}: {problem}. Expected a readable PNG, JPEG or BMP image. "
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

"""The exit statuses of the command lines and the one-paragraph `error: ...` they end with, so
that every entry point reports a user mistake the same way, without a traceback."""

from __future__ import annotations

import os
import re
import sys
from typing import NoReturn

from mhp_keras.errors import UserError

EXIT_USER_ERROR = 2
EXIT_PARTIAL = 3  # mhp-predict: scores.csv written, but some files could not be scored
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)
INTERRUPTED = (
    "interrupted (Ctrl-C). Every file is written whole or not at all, so nothing is half-written; "
    "run the same command again (a training run resumes from its last completed epoch)."
)


def interrupted() -> NoReturn:
    """Ctrl-C: one line on stderr instead of a traceback, and status 130."""
    print(INTERRUPTED, file=sys.stderr)
    sys.exit(EXIT_INTERRUPTED)


def fail(message: str) -> NoReturn:
    """Prints `message` as one paragraph `error: ...` on stderr and exits with status 2."""
    paragraph = re.sub(r"\s*\n\s*", " ", str(message).strip())
    print(f"error: {paragraph}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def sentences(*parts: str) -> str:
    """Joins message parts into sentences, each ending in a full stop unless it has a mark."""
    return " ".join(p if p.endswith((".", "?", "!")) else p + "." for p in parts if p)


def ensure_output_dir(flag: str, path: str) -> None:
    """Creates folder `path` (with its parents) or raises a `UserError` saying why it cannot.

    Creating first and asking afterwards keeps this right when several processes start on the
    same new folder (the workers of a multi-worker run): checking for a folder and then for a
    file would take one that another process created in between for a file.
    """
    try:
        os.makedirs(path, exist_ok=True)
    except FileExistsError:  # exist_ok covers folders only: something else is there
        raise UserError(f"{flag}={path} is a file; expected a folder (or a new path).") from None
    except OSError as e:
        raise UserError(
            f"{flag}={path}: the folder cannot be created ({e.strerror}); expected a folder you "
            "can write to, or a new path inside one."
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{flag}={path} is not writable; expected a folder you can write to.")

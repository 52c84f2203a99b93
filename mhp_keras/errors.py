"""User-facing errors.

A `UserError` is a mistake the user can fix (a bad flag, file or value). Entry points catch it and
print its one-paragraph message without a traceback; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input, config or files; the message says what was expected."""


class DataError(UserError):
    """A dataset, folder or image file is missing, empty, corrupt or of the wrong shape."""


class ConfigError(UserError):
    """A config value is out of range or unknown."""


class DiskFull(UserError):
    """The device of an output has no room for it; what was written before is kept."""

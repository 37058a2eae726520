"""Errors raised before training starts.

Every user-facing problem (a bad file, a missing column, an option out of range) is a
:class:`TextransferError`: the command line prints its message without a traceback, and the
message names what is wrong (file, column, row or option) and what to do about it.
"""


class TextransferError(Exception):
    """Base class for errors the user can fix (bad config, bad data, bad output directory)."""


class ConfigError(TextransferError, ValueError):
    """An option has a bad value, or options contradict each other.

    Args:
        message (`str`): what is wrong and the fix.
        option (`str`, *optional*): the dotted option it is about (``target_training.num_epochs``), so
            that an error from a command-line override can name the command line, not the file.
    """

    def __init__(self, message: str, option: str = None):
        super().__init__(message)
        self.option = option


class DataError(TextransferError, ValueError):
    """A data file, column, row or split cannot be used as configured."""


class OutputDirError(TextransferError, FileExistsError):
    """The output directory holds results that would be overwritten."""

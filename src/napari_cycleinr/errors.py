"""One exception type for everything a user can fix.

The CLI prints these as a single line and exits with code 2; the napari shell shows them as notifications.
Anything else escaping is a bug in this package, so it keeps its traceback.
"""


class CycleINRError(ValueError):
    """Bad input, bad parameters or a bad checkpoint: a message meant for the user."""


class Cancelled(RuntimeError):
    """The user asked a long job (inference, training) to stop; nothing was written."""

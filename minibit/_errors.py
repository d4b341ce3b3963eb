"""The one exception type minibit raises for bad files and bad arguments."""


class FormatError(ValueError):
    """A file, tensor, shape or argument that minibit cannot accept.

    The message always names what was wrong (the file, tensor or field) and the offending
    value, so a user can find the problem without a traceback.
    """

"""The one exception type the loaders raise for bad input: its message is a single line naming
the problem and the fix, so a command-line front end can print it without a traceback."""


class DataError(ValueError):
    """Bad or missing input data (path, layout, image, cache file)."""

"""Errors that mean the user asked for something that cannot be done, as opposed to a bug.

The command line prints these on one line and exits with status 2; anything else surfaces as a traceback. Both are
subclasses of the built-in error a Python caller would expect (`ValueError`, `FileNotFoundError`), so library users
can catch them as such. Light on purpose: every module, the command line included, imports it.
"""


class UsageError(ValueError):
    """Bad input from the user: a setting, an option, a text, the contents of a file they named."""


class MissingFileError(UsageError, FileNotFoundError):
    """A model, detector, data set or file the user named (or the default one) is not there or does not load."""

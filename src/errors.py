"""The one exception type that reaches the user as a one-line message."""


class UserError(Exception):
    """Bad input the user can fix: a wrong name, a missing file, shapes that cannot be stitched.

    Scripts print ``error: <message>`` and exit with status 2 instead of a traceback, so the
    message must say what is wrong *and* what to do about it.
    """

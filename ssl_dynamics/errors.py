"""One exception type for input the user can fix.

Library code raises `UserError` with a one-line message; the CLIs print it and exit with
status 2 instead of showing a traceback.
"""


class UserError(Exception):
    """Bad input: wrong argument, inconsistent run directory, corrupt file."""

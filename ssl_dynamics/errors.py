"""One exception type for input the user can fix.

Library code raises `UserError` with a one-line message; the CLIs print it and exit with
status 2 instead of showing a traceback.
"""


class UserError(Exception):
    """Bad input: wrong argument, inconsistent run directory, corrupt file."""


class WorkFailed(Exception):
    """Work that ran in other processes (device workers, cluster jobs) did not finish; the
    message names the logs. The CLIs print it on one line and exit with status 1."""

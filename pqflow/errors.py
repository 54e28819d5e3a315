"""The one error family the command line reports as a single line with exit code 2."""


class UserError(Exception):
    """Bad input or a missing tool: the message names the problem and the fix."""

"""Errors the user can fix: the CLI prints them on one line and exits 2."""


class BadInput(ValueError):
    """Bad input; the message names the file and the problem on one line."""

"""Errors shared by the command line and the launch helpers it calls (kept below both, so
neither imports the other for them)."""

from __future__ import annotations


class CliError(Exception):
    """A command failed for a reason the user can act on; `code` is the exit status
    (1 bad input or a failed run, 2 refused)."""

    def __init__(self, message: str, code: int = 1):
        self.code = code
        super().__init__(message)

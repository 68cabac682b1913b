# SPDX-License-Identifier: Apache-2.0
"""The command line's errors: what the user can act on, and how any error becomes one line."""

from __future__ import annotations


class CliError(Exception):
    """A failure the user can act on: printed as one line, exit status 1."""


def os_message(e: OSError) -> str:
    """An OSError as one line."""
    # bips' own OSErrors carry their full message in strerror; plain ones get the file name.
    msg = e.strerror or str(e)
    if e.filename and str(e.filename) not in msg:
        msg = f"{e.filename}: {msg}"
    return msg


def error_message(e: BaseException) -> str:
    """Any error main() reports, as the text after "bips: error: "."""
    if isinstance(e, PermissionError):
        return f"permission denied: {os_message(e)}"
    if isinstance(e, OSError):
        return os_message(e)
    return str(e) or type(e).__name__

# SPDX-License-Identifier: Apache-2.0
"""Argument types and options that several commands share."""

from __future__ import annotations

import argparse

SHM_PREFIX = "/dev/shm/bips."


def pool_arg(text: str) -> str:
    """A pool name; the file path /dev/shm/bips.NAME is accepted too."""
    return text.removeprefix(SHM_PREFIX)


def positive(text: str) -> float:
    """A number of seconds > 0."""
    v = float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
    return v


def count(text: str) -> int:
    """A whole number >= 1."""
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {text}")
    return v


def _owner(text: str) -> int | str:
    if text == "any":
        return text
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a uid or 'any', not {text}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be a uid >= 0 or 'any', not {text}")
    return v


def owner_option(p: argparse.ArgumentParser) -> None:
    """--owner: whose pool a consumer accepts."""
    p.add_argument(
        "--owner",
        type=_owner,
        default=None,
        help="accept a pool of this uid ('any': of anyone); default: yours or root's",
    )

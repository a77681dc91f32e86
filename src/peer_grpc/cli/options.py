"""What the command line's options share: environment defaults and readable type errors."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any, TypeVar

from peer_grpc.core.settings import ENV_PREFIX, parse_choice
from peer_grpc.observability.logs import LOG_FORMATS

__all__ = ["LOG_LEVELS", "add_log_options", "describe_default", "env_default", "typed"]

T = TypeVar("T")

#: The levels ``--log-level`` takes.
LOG_LEVELS = ("debug", "info", "warning", "error")


def env_default(variable: str, parse: Callable[[str], T], default: T) -> T:
    """The value of the environment ``variable``, read with ``parse``, or ``default``.

    Raises:
        SystemExit: the variable is set to something ``parse`` refuses.
    """
    raw = os.environ.get(variable)
    if raw is None:
        return default
    try:
        return parse(raw)
    except ValueError as error:
        raise SystemExit(f"peer-grpc: error: {variable}={raw!r}: {error}") from None


def typed(parse: Callable[[str], T]) -> Callable[[str], T]:
    """``parse`` for argparse: its ValueError's words become the error, instead of
    argparse's "invalid <function name> value"."""

    def convert(raw: str) -> T:
        try:
            return parse(raw)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return convert


def describe_default(value: Any) -> str:
    """A default as ``--help`` shows it."""
    if value is None:
        return "none"
    if hasattr(value, "name") and not isinstance(value, str):
        return str(value.name).lower()
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def add_log_options(group: argparse._ArgumentGroup) -> None:
    """``--log-level`` and ``--log-format``, for the commands that run a process."""
    group.add_argument(
        "--log-level",
        type=str.lower,
        choices=LOG_LEVELS,
        default=env_default(f"{ENV_PREFIX}LOG_LEVEL", parse_choice(LOG_LEVELS), "info"),
        help="(default: %(default)s)",
    )
    group.add_argument(
        "--log-format",
        type=str.lower,
        choices=LOG_FORMATS,
        default=env_default(f"{ENV_PREFIX}LOG_FORMAT", parse_choice(LOG_FORMATS), "text"),
        help="one event per line, as text or as a JSON object (default: %(default)s)",
    )

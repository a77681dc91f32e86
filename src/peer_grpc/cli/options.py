"""What the command line's options share: environment defaults and readable type errors."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["describe_default", "env_default", "typed"]

T = TypeVar("T")


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

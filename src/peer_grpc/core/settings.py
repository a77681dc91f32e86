"""Settings as text: the environment variables' prefix, and the parsers that read a
command-line or environment value, each raising ValueError in words a person can act on.

Shared by the server's settings (:mod:`peer_grpc.server.config`) and the client
commands, which need them without loading the server.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = [
    "ENV_PREFIX",
    "parse_at_least_one",
    "parse_bool",
    "parse_choice",
    "parse_float",
    "parse_int",
    "parse_port",
    "parse_positive",
]

#: What every setting's environment variable starts with.
ENV_PREFIX = "PEER_GRPC_"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def parse_bool(raw: str) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` (any case)."""
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("expected one of 1/0, true/false, yes/no, on/off")


def parse_int(raw: str) -> int:
    """A whole number."""
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"expected a whole number, got {raw!r}") from None


def parse_float(raw: str) -> float:
    """A number."""
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"expected a number, got {raw!r}") from None


def parse_positive(raw: str) -> float:
    """A number of seconds (or a rate) above zero."""
    value = parse_float(raw)
    if value <= 0:
        raise ValueError(f"must be above 0, got {raw}")
    return value


def parse_at_least_one(raw: str) -> int:
    """A count of one or more."""
    value = parse_int(raw)
    if value < 1:
        raise ValueError(f"must be at least 1, got {raw}")
    return value


def parse_port(raw: str) -> int:
    """A TCP port, 0 (a free one) to 65535."""
    value = parse_int(raw)
    if not 0 <= value <= 65535:
        raise ValueError(f"must be a port from 0 to 65535, got {raw}")
    return value


def parse_choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    """A parser of one of ``choices`` (any case), returned in lower case."""

    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {raw!r}")
        return value

    return parse

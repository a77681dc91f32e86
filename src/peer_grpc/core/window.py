"""The anti-replay sliding window of IPsec ESP and DTLS, as a ring bitmap (RFC 6479). No gRPC.

A window of width N accepts each sequence at most once, in any order, while it
is within N of the highest sequence accepted so far. The bitmap is a ring of
bytes: sequence ``s`` owns bit ``s % bits``. Advancing the highest sequence
zeroes only the bytes the window moves into, one extra byte of slack keeping
every in-window bit clear of those being reused. Checking and accepting are
O(1) and mutate the ring in place; nothing is allocated per call.
"""

from __future__ import annotations

from enum import Enum

__all__ = [
    "DEFAULT_WINDOW",
    "MAX_WINDOW",
    "Verdict",
    "accept",
    "check",
    "new_ring",
    "ring_size",
    "window_bitmap",
]

#: The window width when none is configured, as in RFC 4303.
DEFAULT_WINDOW = 64
#: The widest window a server may be configured with.
MAX_WINDOW = 4096


class Verdict(Enum):
    """What the window says of a received sequence."""

    ACCEPT = "accept"
    #: Accepted before.
    DUPLICATE = "duplicate"
    #: At or below the window's lower edge: too old to tell, refused.
    BEHIND = "behind"
    #: More than the window's width ahead of the highest accepted.
    AHEAD = "ahead"


def ring_size(width: int) -> int:
    """Bytes of ring for a window of ``width``: the window plus one byte of slack."""
    if not 1 <= width <= MAX_WINDOW:
        raise ValueError(f"window width must be 1-{MAX_WINDOW}, got {width}")
    return (width + 7) // 8 + 1


def new_ring(width: int) -> bytearray:
    """An empty ring for a window of ``width``."""
    return bytearray(ring_size(width))


def check(ring: bytearray, width: int, highest: int, received: int) -> Verdict:
    """Judge ``received`` against a window whose highest accepted sequence is ``highest``."""
    if received > highest:
        return Verdict.ACCEPT if received - highest <= width else Verdict.AHEAD
    if highest - received >= width or received == 0:
        return Verdict.BEHIND
    bit = received % (len(ring) * 8)
    return Verdict.DUPLICATE if ring[bit >> 3] & (1 << (bit & 7)) else Verdict.ACCEPT


def accept(ring: bytearray, highest: int, received: int) -> int:
    """Mark ``received`` accepted (it must have been judged ACCEPT); returns the new highest."""
    bits = len(ring) * 8
    if received > highest:
        _clear_between(ring, highest, received, bits)
        highest = received
    bit = received % bits
    ring[bit >> 3] |= 1 << (bit & 7)
    return highest


def accept_up_to(ring: bytearray, highest: int, floor: int) -> int:
    """Count every sequence up to ``floor`` as accepted, for a record that may have
    lost acceptances (see ``SessionStore.resume``); returns the new highest.

    Which sequences just below ``floor`` were accepted is not known, so all of them
    are taken to have been: a gap the window would have let through stays closed.
    """
    if floor <= highest:
        return highest
    ring[:] = b"\xff" * len(ring)
    return floor


def _clear_between(ring: bytearray, highest: int, received: int, bits: int) -> None:
    """Zero the ring bytes the window enters when its top moves from ``highest`` to ``received``."""
    size = len(ring)
    first_block = highest // 8 + 1
    last_block = received // 8
    if last_block - first_block + 1 >= size:
        ring[:] = bytes(size)
        return
    for block in range(first_block, last_block + 1):
        ring[block % size] = 0


def window_bitmap(ring: bytearray, width: int, highest: int) -> bytes:
    """The window as a plain bitmap for peers: bit ``i`` (LSB-first) set if ``highest - i`` was
    accepted, for ``i`` in ``0 .. width-1``."""
    out = bytearray((width + 7) // 8)
    bits = len(ring) * 8
    for offset in range(min(width, highest)):
        bit = (highest - offset) % bits
        if ring[bit >> 3] & (1 << (bit & 7)):
            out[offset >> 3] |= 1 << (offset & 7)
    return bytes(out)

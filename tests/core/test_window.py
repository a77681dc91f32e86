"""The anti-replay window (RFC 4303 3.4.3, RFC 6479): table-driven rules on the pure code."""

from __future__ import annotations

import pytest

from peer_grpc.core import window
from peer_grpc.core.window import Verdict


def ring_with(width: int, *accepted: int) -> tuple[bytearray, int]:
    ring, highest = window.new_ring(width), 0
    for sequence in accepted:
        assert window.check(ring, width, highest, sequence) is Verdict.ACCEPT
        highest = window.accept(ring, highest, sequence)
    return ring, highest


@pytest.mark.parametrize(
    ("accepted", "received", "verdict"),
    [
        pytest.param((), 1, Verdict.ACCEPT, id="first-call"),
        pytest.param((), 8, Verdict.ACCEPT, id="first-call-out-of-order-within-width"),
        pytest.param((), 9, Verdict.AHEAD, id="first-call-beyond-width"),
        pytest.param((), 0, Verdict.BEHIND, id="zero-is-never-valid"),
        pytest.param((5,), 5, Verdict.DUPLICATE, id="duplicate-of-highest"),
        pytest.param((5, 3), 3, Verdict.DUPLICATE, id="duplicate-below-highest"),
        pytest.param((5,), 3, Verdict.ACCEPT, id="late-arrival-within-window"),
        pytest.param((8, 16, 20), 13, Verdict.ACCEPT, id="lowest-edge-of-window"),
        pytest.param((8, 16, 20), 12, Verdict.BEHIND, id="fell-behind-window"),
        pytest.param((8, 16, 20), 28, Verdict.ACCEPT, id="ahead-by-exactly-width"),
        pytest.param((8, 16, 20), 29, Verdict.AHEAD, id="ahead-by-width-plus-one"),
    ],
)
def test_window_of_eight(accepted: tuple[int, ...], received: int, verdict: Verdict):
    ring, highest = ring_with(8, *accepted)
    assert window.check(ring, 8, highest, received) is verdict


def test_reused_ring_bytes_forget_sequences_that_left_the_window():
    width = 8
    ring, highest = ring_with(width, *range(1, 9))
    highest = window.accept(ring, highest, 17)  # the window jumps: 1..8 leave it
    for sequence in range(10, 17):
        assert window.check(ring, width, highest, sequence) is Verdict.ACCEPT, sequence
    assert window.check(ring, width, highest, 17) is Verdict.DUPLICATE


def test_a_jump_larger_than_the_ring_clears_it_all():
    ring, highest = ring_with(16, *range(1, 17))
    highest = window.accept(ring, highest, 10_000)
    assert window.window_bitmap(ring, 16, highest) == b"\x01\x00"


def test_bitmap_for_peers_has_bit_i_for_highest_minus_i():
    ring, highest = ring_with(16, 1, 2, 4, 10)
    bitmap = window.window_bitmap(ring, 16, highest)
    offsets = {i for i in range(16) if bitmap[i // 8] & (1 << (i % 8))}
    assert offsets == {0, 6, 8, 9}  # 10, 4, 2, 1


@pytest.mark.parametrize("width", [0, window.MAX_WINDOW + 1])
def test_window_width_is_bounded(width: int):
    with pytest.raises(ValueError, match="window width"):
        window.new_ring(width)

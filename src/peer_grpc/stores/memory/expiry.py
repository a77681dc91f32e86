"""Deadlines by the second: the memory store's expiry structure. No gRPC, no sessions.

A timing wheel in the manner of Varghese and Lauck: each deadline sits in the
bucket of its whole second, and a small heap orders the seconds that have
buckets. Moving a deadline within its second costs nothing; across seconds it
is a set removal and an insertion. So a sweep visits only the deadlines that
came due (and, in the current second, some that are about to), never the
sessions that stayed active: its cost is proportional to what expired.

Every batch is bounded by its limit, by construction: a passed second's keys are
taken without a look, at most ``limit`` of them; the current second's keys must
each be asked for their deadline, and a batch asks at most ``limit`` of them,
working through the second's bucket in passes (keys not yet due go to the back).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from itertools import islice

__all__ = ["ExpiryWheel"]


class ExpiryWheel:
    """Keys with deadlines; hands out the keys whose deadlines have passed."""

    __slots__ = ("_buckets", "_pass_left", "_pass_second", "_seconds")

    def __init__(self) -> None:
        #: Whole second -> the keys whose deadline falls within it. Dicts used as
        #: sets: a dict's entry costs half a set's, and popitem() never scans.
        self._buckets: dict[int, dict[str, None]] = {}
        #: A heap of the seconds that have buckets.
        self._seconds: list[int] = []
        #: The current second's pass: which second, and how many of its keys are still
        #: to be asked for their deadline in this pass.
        self._pass_second = -1
        self._pass_left = 0

    def add(self, key: str, deadline: float) -> None:
        """Schedule ``key`` at ``deadline`` (it must not be scheduled already)."""
        second = int(deadline)
        bucket = self._buckets.get(second)
        if bucket is None:
            bucket = self._buckets[second] = {}
            heapq.heappush(self._seconds, second)
        bucket[key] = None

    def move(self, key: str, old: float, new: float) -> None:
        """Move ``key``'s deadline from ``old`` to ``new``."""
        if int(old) != int(new):
            self.discard(key, old)
            self.add(key, new)

    def discard(self, key: str, deadline: float) -> None:
        """Unschedule ``key``, scheduled at ``deadline``. Its bucket, if emptied, goes at
        the next :meth:`pop_due`."""
        bucket = self._buckets.get(int(deadline))
        if bucket is not None:
            bucket.pop(key, None)

    def pop_due(
        self, now: float, limit: int, deadline_of: Callable[[str], float]
    ) -> tuple[list[str], bool]:
        """Unschedule and return at most ``limit`` keys whose deadline is at or before
        ``now``, and whether more are due.

        ``deadline_of`` gives a key's current deadline; it is asked only of keys in
        the current second's bucket, whose deadlines may still be ahead, and of at
        most ``limit`` of them. Once a pass has asked each of that bucket's keys,
        "more" is False; a key of it not found due is taken when its second has
        passed, if not by a later pass.
        """
        due: list[str] = []
        seconds, buckets = self._seconds, self._buckets
        while seconds and seconds[0] <= now:
            room = limit - len(due)
            second = seconds[0]
            bucket = buckets[second]
            if second + 1 <= now:  # the whole second has passed: every key in it is due
                taken = min(room, len(bucket))
                due.extend(bucket.popitem()[0] for _ in range(taken))
                if bucket:
                    return due, True
            else:
                return due, self._ask_current(bucket, second, now, room, deadline_of, due)
            heapq.heappop(seconds)
            del buckets[second]
        return due, False

    def _ask_current(
        self,
        bucket: dict[str, None],
        second: int,
        now: float,
        room: int,
        deadline_of: Callable[[str], float],
        due: list[str],
    ) -> bool:
        """Ask up to ``room`` keys of the current second's bucket, in order, for their
        deadlines; take the due ones into ``due`` and move the rest to the back.
        Returns whether this pass has keys left to ask."""
        if self._pass_second != second or self._pass_left <= 0:
            self._pass_second, self._pass_left = second, len(bucket)
        asked = list(islice(bucket, min(room, self._pass_left)))
        self._pass_left -= len(asked)
        for key in asked:
            del bucket[key]
            if deadline_of(key) <= now:
                due.append(key)
            else:
                bucket[key] = None
        if not bucket:  # an empty bucket goes; its second is in the heap's first place
            heapq.heappop(self._seconds)
            del self._buckets[second]
            return False
        return self._pass_left > 0

    def __len__(self) -> int:
        """Keys scheduled."""
        return sum(len(bucket) for bucket in self._buckets.values())

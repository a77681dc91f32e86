"""Deadlines by the second: the memory store's expiry structure. No gRPC, no sessions.

A timing wheel in the manner of Varghese and Lauck: each deadline sits in the
bucket of its whole second, and a small heap orders the seconds that have
buckets. Moving a deadline within its second costs nothing; across seconds it
is a set removal and an insertion. So a sweep visits only the deadlines that
came due (and, in the current second, the few that are about to), never the
sessions that stayed active: its cost is proportional to what expired.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

__all__ = ["ExpiryWheel"]


class ExpiryWheel:
    """Keys with deadlines; hands out the keys whose deadlines have passed."""

    __slots__ = ("_buckets", "_seconds")

    def __init__(self) -> None:
        #: Whole second -> the keys whose deadline falls within it. Dicts used as
        #: sets: a dict's entry costs half a set's, and popitem() never scans.
        self._buckets: dict[int, dict[str, None]] = {}
        #: A heap of the seconds that have buckets.
        self._seconds: list[int] = []

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
        the current second's bucket, whose deadlines may still be ahead.
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
            else:  # the current second: only some of its keys are due
                ripe = [key for key in bucket if deadline_of(key) <= now]
                for key in ripe[:room]:
                    del bucket[key]
                due.extend(ripe[:room])
                if bucket:
                    return due, len(ripe) > room
            heapq.heappop(seconds)
            del buckets[second]
        return due, False

    def __len__(self) -> int:
        """Keys scheduled."""
        return sum(len(bucket) for bucket in self._buckets.values())

"""The store watch: the health service says NOT_SERVING while a store does not answer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from grpc_health.v1 import health, health_pb2

from peer_grpc.core.errors import StoreUnavailable
from peer_grpc.stores.protocols import SessionStore, TaskStore
from peer_grpc.wire.contract import SERVICE_NAME

__all__ = ["StoreWatch", "set_health"]

log = logging.getLogger(__name__)

#: The health service names a server reports: the whole server ("") and the PeerService.
_HEALTH_NAMES = ("", SERVICE_NAME)


async def set_health(
    servicer: health.aio.HealthServicer, status: health_pb2.HealthCheckResponse.ServingStatus
) -> None:
    """Report ``status`` for the server and for the PeerService alike."""
    for name in _HEALTH_NAMES:
        await servicer.set(name, status)


class StoreWatch:
    """Checks the stores every ``interval`` seconds and reports the answer as health.

    Args:
        stores: what to check, in order.
        health_servicer: where to report SERVING or NOT_SERVING.
        interval: seconds between checks.
        on_unavailable: told of each failed check (to count it in the metrics).
    """

    def __init__(
        self,
        stores: Sequence[SessionStore | TaskStore],
        health_servicer: health.aio.HealthServicer,
        interval: float,
        on_unavailable: Callable[[], None] = lambda: None,
    ) -> None:
        self._stores = tuple(stores)
        self._health = health_servicer
        self._interval = interval
        self._on_unavailable = on_unavailable
        #: Whether the stores answered at the last check (what health reports).
        self.available = True

    async def run(self) -> None:
        """Check forever (until cancelled)."""
        while True:
            try:
                for store in self._stores:
                    await store.check()
            except StoreUnavailable as error:
                self._on_unavailable()
                await self._report(False, error.message)
            except Exception as error:
                log.exception("the store check failed")
                await self._report(False, str(error))
            else:
                await self._report(True, "")
            await asyncio.sleep(self._interval)

    async def _report(self, available: bool, why: str) -> None:
        if available == self.available:
            return
        self.available = available
        serving = health_pb2.HealthCheckResponse
        await set_health(self._health, serving.SERVING if available else serving.NOT_SERVING)
        if available:
            log.info("the store answers again: SERVING")
        else:
            log.warning("the store does not answer (%s): NOT_SERVING until it does", why)

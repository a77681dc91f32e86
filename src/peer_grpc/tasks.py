"""Task handlers that applications register, and running them. No gRPC here."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

__all__ = ["TaskHandler", "TaskOutcome", "TaskRegistry", "default_registry"]

log = logging.getLogger(__name__)

#: A handler takes the task's JSON payload and returns a JSON object, directly or awaited.
TaskHandler: TypeAlias = Callable[
    [dict[str, Any]], Mapping[str, Any] | Awaitable[Mapping[str, Any]]
]
_H = TypeVar("_H", bound=TaskHandler)


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    """What a handler produced: a result, or an error code and message (never both)."""

    result: Mapping[str, Any] | None = None
    error_code: str = ""
    error_message: str = ""

    @property
    def ok(self) -> bool:
        """Whether the handler completed with a result."""
        return not self.error_code


class TaskRegistry:
    """Named task handlers.

    Register with the decorator::

        registry = TaskRegistry()

        @registry.task("resize")
        async def resize(payload: dict[str, Any]) -> dict[str, Any]:
            ...

    Plain (non-async) handlers run in a worker thread, never on the event loop.
    """

    def __init__(self) -> None:
        self._handlers: dict[str, TaskHandler] = {}

    def task(self, name: str) -> Callable[[_H], _H]:
        """Decorator that registers the function as the handler of task type ``name``."""

        def register(handler: _H) -> _H:
            self.register(name, handler)
            return handler

        return register

    def register(self, name: str, handler: TaskHandler) -> None:
        """Register ``handler`` for task type ``name``; a name is registered once."""
        if not name:
            raise ValueError("a task type needs a name")
        if name in self._handlers:
            raise ValueError(f"task type {name!r} is already registered")
        self._handlers[name] = handler

    def __contains__(self, name: object) -> bool:
        return name in self._handlers

    @property
    def names(self) -> tuple[str, ...]:
        """The registered task types, sorted."""
        return tuple(sorted(self._handlers))

    async def run(self, name: str, payload: dict[str, Any]) -> TaskOutcome:
        """Run the handler of ``name``; a handler's exception becomes a failed outcome.

        The exception's traceback is logged here and never returned to the caller.
        """
        handler = self._handlers[name]
        try:
            if inspect.iscoroutinefunction(handler):
                result = await handler(payload)
            else:
                result = await asyncio.to_thread(handler, payload)
                if inspect.isawaitable(result):
                    result = await result
        except Exception as error:
            log.exception("task handler %r failed", name)
            return TaskOutcome(error_code="HANDLER_ERROR", error_message=_describe(error))
        if not isinstance(result, Mapping):
            return TaskOutcome(
                error_code="INVALID_RESULT",
                error_message=f"handler returned {type(result).__name__}, expected a JSON object",
            )
        return TaskOutcome(result=result)


def _describe(error: Exception) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


async def _echo(payload: dict[str, Any]) -> dict[str, Any]:
    """Return the payload unchanged."""
    return payload


def default_registry() -> TaskRegistry:
    """A registry with the built-in handlers: ``echo`` returns its payload."""
    registry = TaskRegistry()
    registry.register("echo", _echo)
    return registry

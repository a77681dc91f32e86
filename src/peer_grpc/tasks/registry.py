"""Task handlers that applications register, and running one handler. No gRPC here.

The lifecycle around a handler (states, limits, timeouts, cancellation) lives in
:mod:`peer_grpc.tasks.manager`; this module only knows how to call a handler and
what its answer means.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import inspect
import json
import logging
import math
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

from pydantic import BaseModel, ValidationError

from peer_grpc.core.errors import InvalidArgument
from peer_grpc.core.task import Progress
from peer_grpc.tasks.reporting import TaskReporter
from peer_grpc.tasks.schemas import ResultMismatch, json_schema, payload_violations, plain_result

__all__ = [
    "DEFAULT_MAX_RESULT_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_SLEEP_SECONDS",
    "Retry",
    "TaskContext",
    "TaskHandler",
    "TaskOutcome",
    "TaskRegistry",
    "TaskRejected",
    "TaskType",
    "current_task",
    "default_registry",
    "json_depth",
]

log = logging.getLogger(__name__)

#: A handler takes the task's JSON payload and returns a JSON object, directly or awaited.
TaskHandler: TypeAlias = Callable[
    [dict[str, Any]], Mapping[str, Any] | Awaitable[Mapping[str, Any]]
]
#: A handler registered with an input model takes an instance of it, and may return one
#: of its output model.
_H = TypeVar("_H", bound=Callable[..., Any])

#: The longest the built-in ``sleep`` handler sleeps.
MAX_SLEEP_SECONDS = 300.0
#: How deeply a task's payload or result may nest objects and arrays. Each level is two
#: messages (Struct, Value) on the wire, and protobuf decoders stop at 100.
MAX_JSON_DEPTH = 32
#: The largest handler result kept, in bytes of compact JSON. A task's result lives in
#: the store for the whole retention and rides in every reply that shows the task.
DEFAULT_MAX_RESULT_BYTES = 1024 * 1024
#: The longest progress message kept, in characters.
MAX_PROGRESS_MESSAGE = 1024


@dataclass(frozen=True, slots=True)
class Retry:
    """A handler's retry policy: how often a task may run when its runner is lost.

    A task is run again only when the process running it died or was cut off from
    the store for longer than the task's lease; a handler that raises or times out
    is not retried. A retryable handler must therefore expect to run more than
    once for one task (at least once, at most ``max_attempts`` times) and make its
    effects idempotent, for example keyed by :attr:`TaskContext.task_id`.
    """

    #: The most runs a task may get, the first included.
    max_attempts: int = 3

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")


#: Handlers registered without a policy run once: a lost runner fails the task.
NO_RETRY = Retry(max_attempts=1)


class TaskRejected(Exception):
    """Raise from a handler to refuse a task without doing its work (it ends REJECTED).

    The message is sent to the caller, so say what was wrong with the input.
    """


@dataclass(slots=True)
class TaskContext:
    """What a running handler may know about its task, and may tell of it; see
    :func:`current_task`.

    Async handlers are canceled the asyncio way. A plain handler runs in a thread
    that cannot be interrupted, so it should look at :meth:`cancelled` (or wait with
    :meth:`wait_cancelled` instead of sleeping) and return early once it is set:
    its result is thrown away by then, and it holds a worker until it returns.

    While it runs, a handler may report :meth:`progress` and a :meth:`partial`
    result (from a thread too), and an async handler of a type registered with
    ``asks_for_input=True`` may :meth:`ask` its delegating peer a question.
    """

    task_id: str
    task_type: str
    #: The peer that delegated the task.
    peer_id: str
    #: Seconds the task may run.
    timeout: float
    #: Which run this is: 1 for the first, more when a lost runner's task runs again.
    attempt: int = 1
    #: Whether the task's type was registered as one that asks for input.
    may_ask: bool = False
    #: The largest partial result or question kept (compact JSON bytes).
    max_bytes: int = DEFAULT_MAX_RESULT_BYTES
    #: Carries reports and questions to the store; None outside a task manager.
    _reporter: TaskReporter | None = field(default=None, repr=False)
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    #: The worker thread's future while a plain handler runs (see :meth:`worker_done`).
    _worker: concurrent.futures.Future[Any] | None = field(default=None, repr=False)

    def cancelled(self) -> bool:
        """Whether the task was canceled or ran out of time: stop working."""
        return self._cancel.is_set()

    def wait_cancelled(self, seconds: float) -> bool:
        """Block up to ``seconds`` (in a thread handler); True as soon as the task is canceled."""
        return self._cancel.wait(seconds)

    def cancel(self) -> None:
        """Ask the handler to stop (the task manager calls this)."""
        self._cancel.set()

    def progress(self, fraction: float | None = None, message: str = "") -> None:
        """Report how far the task has come: ``fraction`` of the work done (0 to 1),
        and what it is doing, for people.

        Call as often as is handy: the task shows the latest report, and the store
        takes at most one per task per progress interval (four a second by default).

        Raises:
            ValueError: ``fraction`` is not a number from 0 to 1, or ``message`` is
                longer than :data:`MAX_PROGRESS_MESSAGE` characters.
        """
        if fraction is not None and (
            isinstance(fraction, bool)
            or not isinstance(fraction, int | float)
            or not 0 <= fraction <= 1  # NaN fails this too
        ):
            raise ValueError(f"progress fraction must be a number from 0 to 1, not {fraction!r}")
        if len(message) > MAX_PROGRESS_MESSAGE:
            raise ValueError(f"progress message is longer than {MAX_PROGRESS_MESSAGE} characters")
        self._send(Progress(None if fraction is None else float(fraction), message), None)

    def partial(self, result: Mapping[str, Any] | BaseModel) -> None:
        """Report the task's result so far: a JSON object (or a model instance) that
        replaces the partial result before it. Coalesced like :meth:`progress`.

        Raises:
            ValueError: ``result`` is not a JSON object of at most the server's
                largest result.
        """
        self._send(None, _checked_json("partial result", result, self.max_bytes))

    async def ask(self, question: Mapping[str, Any] | BaseModel) -> dict[str, Any]:
        """Ask the delegating peer ``question`` (a JSON object) and wait for its answer.

        The task shows the question in state INPUT_REQUIRED until the peer answers
        with ProvideInput; then it is WORKING again and this returns the answer, a
        JSON object, as the peer sent it (check it as any input). The wait counts
        against the task's timeout; if the task is canceled or runs out of time
        meanwhile, this raises CancelledError like any cancellation. A handler that
        stops waiting (``asyncio.wait_for(task.ask(...), 30)``, say) gets its task
        back WORKING, the question taken back, and may go on or ask again.

        A plain handler, in its thread, has no event loop to wait on: only async
        handlers may await this.

        Raises:
            RuntimeError: the task type was not registered with ``asks_for_input``,
                another question of the task waits for its answer, or this is
                awaited outside the task's event loop.
            ValueError: ``question`` is not a JSON object of at most the server's
                largest result.
        """
        reporter = self._reporter
        if not self.may_ask:
            raise RuntimeError(
                f"task type {self.task_type!r} was not registered with asks_for_input=True"
            )
        if reporter is None or _in_other_thread(reporter):
            raise RuntimeError("ask() waits on the event loop: call it from an async handler")
        checked = _checked_json("question", question, self.max_bytes)
        return await reporter.ask(checked)

    def _send(self, progress: Progress | None, partial_result: Mapping[str, Any] | None) -> None:
        reporter = self._reporter
        if reporter is None or self._cancel.is_set():
            return  # outside a task manager, or stopped: nobody reads it
        if _in_other_thread(reporter):
            reporter.loop.call_soon_threadsafe(reporter.report, progress, partial_result)
        else:
            reporter.report(progress, partial_result)

    async def worker_done(self) -> None:
        """Wait until a plain handler's thread has returned (at once for async handlers).

        Cancelling a plain handler ends its task at once, but its thread runs on
        until the handler notices; the task manager holds the task's slot until then.
        """
        worker = self._worker
        if worker is not None and not worker.done():
            # Its outcome was handled (or thrown away) already; only its end matters here.
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(worker)


def _in_other_thread(reporter: TaskReporter) -> bool:
    """Whether the caller runs outside the reporter's event loop (a plain handler's thread)."""
    try:
        return asyncio.get_running_loop() is not reporter.loop
    except RuntimeError:
        return True


def _checked_json(what: str, value: object, max_bytes: int) -> dict[str, Any]:
    """``value`` as a plain JSON object of at most ``max_bytes``, or ValueError."""
    checked = _as_json_result(plain_result(None, value), max_bytes)
    if not checked.ok or checked.result is None:
        raise ValueError(f"{what}: {checked.error_message.removeprefix('handler result ')}")
    return dict(checked.result)


_current: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar(
    "peer_grpc_task", default=None
)


def current_task() -> TaskContext:
    """The task the calling handler runs for.

    Raises:
        RuntimeError: called outside a task handler.
    """
    context = _current.get()
    if context is None:
        raise RuntimeError("current_task() is only available inside a task handler")
    return context


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

    @property
    def rejected(self) -> bool:
        """Whether the handler refused the task (see :class:`TaskRejected`)."""
        return self.error_code == "REJECTED"


@dataclass(frozen=True, slots=True)
class TaskType:
    """A registered task type: its handler, and what it says of itself to callers."""

    name: str
    handler: Callable[..., Any]
    retry: Retry = NO_RETRY
    #: What the type does, for people.
    description: str = ""
    #: The model its payload must fit (the handler gets an instance); None: any object.
    input_model: type[BaseModel] | None = None
    #: The model its result must fit; None: any object.
    output_model: type[BaseModel] | None = None
    #: Whether its handler may stop to ask the delegating peer for input.
    asks_for_input: bool = False

    @property
    def input_schema(self) -> dict[str, Any]:
        """The JSON Schema of the payload."""
        return json_schema(self.input_model)

    @property
    def output_schema(self) -> dict[str, Any]:
        """The JSON Schema of the result."""
        return json_schema(self.output_model)


class TaskRegistry:
    """Named task handlers.

    Register with the decorator::

        registry = TaskRegistry()

        @registry.task("resize")
        async def resize(payload: dict[str, Any]) -> dict[str, Any]:
            ...

    or with pydantic models, which callers are told of and payloads and results
    must fit::

        @registry.task("resize", input=ResizeIn, output=ResizeOut, description="...")
        async def resize(request: ResizeIn) -> ResizeOut:
            ...

    Plain (non-async) handlers run in a worker thread, never on the event loop.
    """

    def __init__(self) -> None:
        self._types: dict[str, TaskType] = {}

    def task(
        self,
        name: str,
        *,
        retry: Retry = NO_RETRY,
        input: type[BaseModel] | None = None,
        output: type[BaseModel] | None = None,
        description: str = "",
        asks_for_input: bool = False,
    ) -> Callable[[_H], _H]:
        """Decorator that registers the function as the handler of task type ``name``.

        With ``retry``, a task whose runner is lost runs again (see :class:`Retry`).
        With ``input``, a payload that does not fit the model is refused before any
        task exists, and the handler gets an instance of it; with ``output``, a result
        that does not fit fails the task ``INVALID_RESULT``. With ``asks_for_input``,
        the handler may ``await current_task().ask(question)``, and Describe says so.
        """

        def register(handler: _H) -> _H:
            self.register(
                name,
                handler,
                retry=retry,
                input=input,
                output=output,
                description=description,
                asks_for_input=asks_for_input,
            )
            return handler

        return register

    def register(
        self,
        name: str,
        handler: Callable[..., Any],
        *,
        retry: Retry = NO_RETRY,
        input: type[BaseModel] | None = None,
        output: type[BaseModel] | None = None,
        description: str = "",
        asks_for_input: bool = False,
    ) -> None:
        """Register ``handler`` for task type ``name``; a name is registered once."""
        if not name:
            raise ValueError("a task type needs a name")
        if name in self._types:
            raise ValueError(f"task type {name!r} is already registered")
        self._types[name] = TaskType(
            name, handler, retry, description, input, output, asks_for_input
        )

    def retry_of(self, name: str) -> Retry:
        """The retry policy ``name`` was registered with."""
        return self._types[name].retry

    def type_of(self, name: str) -> TaskType:
        """The registered task type ``name``."""
        return self._types[name]

    @property
    def types(self) -> tuple[TaskType, ...]:
        """Every registered task type, by name."""
        return tuple(self._types[name] for name in self.names)

    def check_payload(self, name: str, payload: Mapping[str, Any]) -> None:
        """Refuse a payload that does not fit task type ``name``'s input model.

        Raises:
            InvalidArgument: naming each offending field by its JSON path
                (``payload.size.width``).
        """
        model = self._types[name].input_model
        if model is not None:
            violations = payload_violations(model, payload)
            if violations:
                raise InvalidArgument(violations)

    def takes_any_payload(self, name: str) -> bool:
        """Whether task type ``name`` takes any JSON object (it has no input model)."""
        return self._types[name].input_model is None

    def __contains__(self, name: object) -> bool:
        return name in self._types

    @property
    def names(self) -> tuple[str, ...]:
        """The registered task types, sorted."""
        return tuple(sorted(self._types))

    async def run(
        self,
        name: str,
        payload: dict[str, Any],
        context: TaskContext | None = None,
        *,
        executor: concurrent.futures.Executor | None = None,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
    ) -> TaskOutcome:
        """Run the handler of ``name``; whatever it raises becomes a failed outcome.

        A result larger than ``max_result_bytes`` (as compact JSON) fails the task
        with ``RESULT_TOO_LARGE`` instead of being kept.

        ``context`` is what :func:`current_task` returns inside the handler. Plain
        handlers run on ``executor`` (asyncio's default one when omitted). A
        handler's traceback is logged here and never returned to the caller.
        Cancelling this coroutine cancels an async handler, and asks a plain one
        to stop through its context.
        """
        task_type = self._types[name]
        token = _current.set(context)
        try:
            argument = _argument(task_type, payload)
            result = plain_result(
                task_type.output_model, await _call(task_type.handler, argument, context, executor)
            )
        except TaskRejected as refusal:
            return TaskOutcome(error_code="REJECTED", error_message=str(refusal) or name)
        except _PayloadMismatch as mismatch:
            return TaskOutcome(error_code="INVALID_PAYLOAD", error_message=str(mismatch))
        except ResultMismatch as mismatch:
            return TaskOutcome(error_code="INVALID_RESULT", error_message=str(mismatch))
        except Exception as error:
            log.exception("task handler %r failed", name)
            return TaskOutcome(error_code="HANDLER_ERROR", error_message=_describe(error))
        finally:
            _current.reset(token)
        return _as_json_result(result, max_result_bytes)


class _PayloadMismatch(ValueError):
    """A queued payload no longer fits its task type's input model."""


def _argument(task_type: TaskType, payload: dict[str, Any]) -> object:
    """What the handler is called with: the payload, or an instance of the input model.

    Payloads are checked before their task exists; one that does not fit here was
    queued before the type had its model (or by another version of it).
    """
    if task_type.input_model is None:
        return payload
    try:
        return task_type.input_model.model_validate(payload)
    except ValidationError as error:
        raise _PayloadMismatch(f"payload does not fit the input schema: {error}") from None


async def _call(
    handler: Callable[..., Any],
    payload: object,
    context: TaskContext | None,
    executor: concurrent.futures.Executor | None,
) -> Any:
    if _is_async(handler):
        return await handler(payload)
    # The copied context carries current_task() into the worker thread.
    in_context = contextvars.copy_context().run
    if executor is None:
        work = asyncio.get_running_loop().run_in_executor(None, in_context, handler, payload)
    else:
        worker = executor.submit(in_context, handler, payload)
        if context is not None:
            context._worker = worker
        work = asyncio.wrap_future(worker)
    try:
        result = await work
    except asyncio.CancelledError:
        if context is not None:
            context.cancel()  # a thread cannot be interrupted: ask it to stop
        raise
    if inspect.isawaitable(result):
        result = await result
    return result


def _is_async(handler: Callable[..., Any]) -> bool:
    """Whether calling ``handler`` makes a coroutine: an async function, or an object
    with an async ``__call__`` (which would otherwise be called, uselessly, in a thread)."""
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - the method itself, not callability
    )


def _as_json_result(result: object, max_bytes: int) -> TaskOutcome:
    """The outcome for a handler's return value, which must be a JSON object of at most
    ``max_bytes``."""
    if not isinstance(result, Mapping):
        return TaskOutcome(
            error_code="INVALID_RESULT",
            error_message=f"handler returned {type(result).__name__}, expected a JSON object",
        )
    try:
        # A round trip through JSON leaves plain dicts, lists, strings, numbers and
        # booleans that any store can keep. Numbers become doubles, as in the
        # contract's Struct, so one too large for a double is refused here.
        text = json.dumps(result, allow_nan=False, default=_plain_mapping, separators=(",", ":"))
        plain = _AS_DOUBLES.decode(text)
    except (TypeError, ValueError, RecursionError) as error:
        return TaskOutcome(
            error_code="INVALID_RESULT", error_message=f"handler result is not JSON: {error}"
        )
    size = len(text.encode())
    if size > max_bytes:
        return TaskOutcome(
            error_code="RESULT_TOO_LARGE",
            error_message=f"handler result is {size} bytes of JSON; at most {max_bytes} are kept",
        )
    if json_depth(plain) > MAX_JSON_DEPTH:
        return TaskOutcome(
            error_code="INVALID_RESULT",
            error_message=f"handler result is nested deeper than {MAX_JSON_DEPTH} levels",
        )
    return TaskOutcome(result=plain)


def _finite_double(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]}... does not fit a double")
    return value


#: Reads JSON with every number a finite double (made once: a decoder is not free).
_AS_DOUBLES = json.JSONDecoder(parse_int=_finite_double, parse_float=_finite_double)


def json_depth(value: object) -> int:
    """How deeply objects and arrays nest in a JSON value (a scalar is 0, ``{}`` is 1)."""
    if isinstance(value, dict):
        return 1 + max(map(json_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(json_depth, value), default=0)
    return 0


def _plain_mapping(value: object) -> dict[Any, Any]:
    """Let json take any Mapping as an object; anything else it cannot take stays an error."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _describe(error: Exception) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


async def _echo(payload: dict[str, Any]) -> dict[str, Any]:
    """Return the payload unchanged."""
    return payload


async def _sleep(payload: dict[str, Any]) -> dict[str, Any]:
    """Sleep ``payload["seconds"]`` (0 to :data:`MAX_SLEEP_SECONDS`), then say so."""
    seconds = payload.get("seconds", 1)
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or not 0 <= seconds <= MAX_SLEEP_SECONDS
    ):
        raise TaskRejected(f"seconds must be a number from 0 to {MAX_SLEEP_SECONDS:g}")
    await asyncio.sleep(seconds)
    return {"slept": seconds}


def default_registry() -> TaskRegistry:
    """A registry with the built-in handlers.

    ``echo`` returns its payload; ``sleep`` waits ``{"seconds": N}`` (at most
    :data:`MAX_SLEEP_SECONDS`, default 1) and returns ``{"slept": N}``.
    """
    registry = TaskRegistry()
    registry.register("echo", _echo, description="Returns its payload.")
    registry.register(
        "sleep",
        _sleep,
        description=f'Waits {{"seconds": N}} (0 to {MAX_SLEEP_SECONDS:g}, default 1) '
        'and returns {"slept": N}.',
    )
    return registry

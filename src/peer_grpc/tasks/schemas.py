"""What a task type takes and gives: pydantic models, their JSON Schemas, and mismatches.

A task type registered with an input model refuses a payload that does not fit it
before any task exists (each offending field named by its JSON path); one registered
with an output model fails a task whose result does not fit it (``INVALID_RESULT``).
A type registered without models takes and gives any JSON object: its schemas are
open. No gRPC here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from peer_grpc.core.errors import FieldViolation

__all__ = [
    "OPEN_SCHEMA",
    "ResultMismatch",
    "json_path",
    "json_schema",
    "payload_violations",
    "plain_result",
]

#: The schema of a payload or result that may be any JSON object.
OPEN_SCHEMA: Mapping[str, Any] = {"type": "object"}


class ResultMismatch(ValueError):
    """A handler's result does not fit its task type's output model."""


def json_schema(model: type[BaseModel] | None) -> dict[str, Any]:
    """The JSON Schema of ``model``; the open schema without one."""
    if model is None:
        return dict(OPEN_SCHEMA)
    return model.model_json_schema()


def json_path(root: str, location: Sequence[str | int]) -> str:
    """``root`` followed by a pydantic error location: ``payload.size[0].width``."""
    return root + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in location)


def payload_violations(model: type[BaseModel], payload: Mapping[str, Any]) -> list[FieldViolation]:
    """Each way ``payload`` fails to fit ``model``, by JSON path; empty if it fits."""
    try:
        model.model_validate(payload)
    except ValidationError as error:
        return _violations("payload", error)
    return []


def plain_result(model: type[BaseModel] | None, result: object) -> object:
    """A handler's ``result`` as plain JSON values, checked against ``model``.

    A model instance is dumped as JSON would carry it; anything else is left for the
    caller to check as a JSON object.

    Raises:
        ResultMismatch: the result does not fit ``model``.
    """
    if model is not None:
        try:
            checked = model.model_validate(
                result.model_dump() if isinstance(result, BaseModel) else result
            )
        except ValidationError as error:
            problems = "; ".join(
                f"{violation.field}: {violation.description}"
                for violation in _violations("result", error)
            )
            raise ResultMismatch(
                f"handler result does not fit its output schema: {problems}"
            ) from None
        return checked.model_dump(mode="json")
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    return result


def _violations(root: str, error: ValidationError) -> list[FieldViolation]:
    return [
        FieldViolation(json_path(root, detail["loc"]), detail["msg"])
        for detail in error.errors(include_url=False)
    ]

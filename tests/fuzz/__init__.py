"""What the fuzz tests share, one concern a module.

- :mod:`~tests.fuzz.harness`: the server on a thread of its own, and raw calls of bytes.
- :mod:`~tests.fuzz.invariants`: what every call must keep, and the sessions a test keeps.
- :mod:`~tests.fuzz.requests`: strategies for request bytes.
- :mod:`~tests.fuzz.metadata`: strategies for call metadata.
- :mod:`~tests.fuzz.known`: what the fuzzer knows of the server, and the strategies
  built against it.
"""

from tests.fuzz.harness import CALL_TIMEOUT, SCALE, FuzzServer, fuzz_config, scaled
from tests.fuzz.invariants import FORBIDDEN, Outcome, SessionPool, check_outcome, sent_session_id
from tests.fuzz.known import Known
from tests.fuzz.requests import METHODS, METHODS_BY_NAME, ascii_text, one_of_these

__all__ = [
    "CALL_TIMEOUT",
    "FORBIDDEN",
    "METHODS",
    "METHODS_BY_NAME",
    "SCALE",
    "FuzzServer",
    "Known",
    "Outcome",
    "SessionPool",
    "ascii_text",
    "check_outcome",
    "fuzz_config",
    "one_of_these",
    "scaled",
    "sent_session_id",
]

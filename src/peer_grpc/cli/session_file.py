"""The file in which the command line keeps a session between commands (``--session-file``)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from peer_grpc.client import SessionTicket

__all__ = ["SessionFile"]


@dataclass(frozen=True, slots=True)
class SessionFile:
    """Where the CLI keeps a session between commands (``--session-file``): a secret."""

    path: Path

    def load(self) -> tuple[str, SessionTicket] | None:
        """The saved peer id and ticket, or None when there is no file yet."""
        try:
            saved = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            raise ValueError(f"--session-file {self.path}: cannot read it: {error}") from None
        fields = ("peer_id", "session_id", "session_token")
        if not isinstance(saved, dict) or not all(isinstance(saved.get(f), str) for f in fields):
            raise ValueError(
                f"--session-file {self.path}: not a saved session "
                "(a JSON object of peer_id, session_id and session_token)"
            )
        return saved["peer_id"], SessionTicket(saved["session_id"], saved["session_token"])

    def save(self, peer_id: str, ticket: SessionTicket) -> None:
        """Write the session, readable by its owner alone, replacing the file in one step."""
        text = json.dumps(
            {
                "peer_id": peer_id,
                "session_id": ticket.session_id,
                "session_token": ticket.session_token,
            }
        )
        partial = self.path.with_name(self.path.name + ".partial")
        try:
            descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(text)
            os.replace(partial, self.path)
        except OSError as error:
            raise ValueError(f"--session-file {self.path}: cannot write it: {error}") from None

    def forget(self) -> None:
        """Remove the file: its session has ended."""
        self.path.unlink(missing_ok=True)

"""The package's public face is what the README documents, no more and no less."""

from __future__ import annotations

import re
from pathlib import Path

import peer_grpc

README = Path(__file__).resolve().parents[1] / "README.md"


def documented_names() -> set[str]:
    text = README.read_text()
    section = text.split("<!-- public-api:start -->")[1].split("<!-- public-api:end -->")[0]
    return set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", section))


def test_readme_documents_exactly_the_exported_names():
    assert documented_names() == set(peer_grpc.__all__)


def test_every_exported_name_exists():
    for name in peer_grpc.__all__:
        assert hasattr(peer_grpc, name), name

"""Fixtures of the store contracts: an empty Postgres schema per test.

Every test that touches Postgres gets a schema of its own on the session's server
(``postgres_url``, ``tests/infra_fixtures.py``), so tests neither see each other's rows nor
depend on order; the adapters find it through the URL's ``search_path``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import pytest


def with_search_path(url: str, schema: str) -> str:
    """``url`` with its connections' ``search_path`` set to ``schema``."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "search_path"]
    query.append(("search_path", schema))
    return urlunsplit(parts._replace(query=urlencode(query)))


@pytest.fixture
async def postgres_schema_url(postgres_url: str) -> AsyncIterator[str]:
    """A URL whose connections work in a new, empty schema, dropped after the test."""
    schema = f"test_{uuid.uuid4().hex[:16]}"
    connection = await asyncpg.connect(postgres_url)
    try:
        await connection.execute(f"CREATE SCHEMA {schema}")
        yield with_search_path(postgres_url, schema)
        await connection.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await connection.close()

"""Fixtures for the usage store tests: a throwaway PostgreSQL cluster per test session.

``usage_postgres_dsn`` is defined in :mod:`tests.observe.postgres` (shared with tests/e2e).
"""

from __future__ import annotations

import psycopg
import pytest

from tests.observe.postgres import usage_postgres_dsn

__all__ = ["reset_usage_tables", "usage_postgres_db", "usage_postgres_dsn"]


def reset_usage_tables(dsn: str) -> None:
    """Drop the usage tables so the next store starts from an empty database."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS usage_records, usage_schema_version")


@pytest.fixture
def usage_postgres_db(usage_postgres_dsn: str) -> str:
    """The session's PostgreSQL DSN, with no usage tables in it."""
    reset_usage_tables(usage_postgres_dsn)
    return usage_postgres_dsn

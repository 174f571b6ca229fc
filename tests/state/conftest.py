"""The ``redis_server`` fixture: a real redis-server per test (tests/redis_server.py)."""

from tests.redis_server import redis_server

__all__ = ["redis_server"]

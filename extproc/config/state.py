"""Configuration of the state shared between extproc replicas (docs/scaling.md).

One replica keeps its health board, key lockouts, dedup windows and sessions
in memory (``backend: memory``, the default). Several replicas share them
through Redis (``backend: redis``): each still reads its own memory on the
request path, and changes travel through Redis in the background.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

__all__ = ["StateConfig"]


def _seconds(value: object) -> object:
    from extproc.config.model import _parse_duration

    return _parse_duration(value)


Seconds = Annotated[float, BeforeValidator(_seconds)]


class StateConfig(BaseModel):
    """Where the per-proxy state lives: this process only, or shared through Redis."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: ``memory``: this replica only. ``redis``: shared by every replica that
    #: names the same ``redis_url`` and ``key_prefix``.
    backend: Literal["memory", "redis"] = Field(
        "memory", description="memory (one replica) or redis (shared by replicas)"
    )
    #: The Redis server (``redis://[:password@]host:port/db``, ``rediss://`` for TLS).
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="the Redis server")
    #: Prefix of every key and of the pub/sub channel (``<prefix>events``): replicas
    #: of one proxy share it; two proxies on one Redis use two prefixes.
    key_prefix: str = Field(
        "llmproxy:", min_length=1, max_length=64, description="prefix of keys and channel"
    )
    #: Changes waiting to be sent to Redis; beyond, the oldest are dropped (counted).
    queue_size: int = Field(10000, ge=1, le=1_000_000, description="changes waiting to be sent")
    #: Keys a replica loads at start (and after a reconnect) at most.
    snapshot_limit: int = Field(100_000, ge=0, description="keys loaded at start at most")
    #: Reconnect back-off while Redis is unreachable: doubling up to this.
    reconnect_max: Seconds = Field(5.0, gt=0, le=300, description="longest reconnect back-off")
    #: Connecting and each Redis command give up after this long.
    timeout: Seconds = Field(2.0, gt=0, le=60, description="connect and command timeout")

    @field_validator("redis_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"state.redis_url {value!r} must start with redis://, rediss://")
        return value

"""Replication of the per-proxy state between extproc replicas through Redis.

The request path never waits for Redis. Each replica keeps its own state in
memory and reads it synchronously; :meth:`RedisBus.publish` only appends the
change to a bounded queue (the oldest change is dropped, and counted, when it
is full). Two background tasks on the event loop do the I/O:

* the **publisher** drains the queue in batches (the last change of a key in a
  batch wins) and pipelines, per change, ``SET <prefix><kind>:<key> <change>
  PX <ms left>`` (``DEL`` for a removal) and ``PUBLISH <prefix>events <change>``;
* the **subscriber** listens on ``<prefix>events`` and hands every other
  replica's change to the handler of its kind. Each time it (re)connects it
  first subscribes, then loads the snapshot (``SCAN <prefix>*``, at most
  ``snapshot_limit`` keys), so a new replica learns the cooldowns, lockouts and
  sessions that exist, and a replica back from an outage what it missed.

Redis down, at start or later: nothing fails. The replica goes on with its
local state, logs one warning per outage (and one line when Redis is back),
counts each failed attempt in :attr:`RedisBus.errors`, and retries with a
doubling back-off up to ``reconnect_max``; changes made meanwhile wait in the
queue (bounded) and are sent once Redis answers again, unless they expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import time
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from extproc.state.bus import Apply
from extproc.state.codec import Change, decode_change, encode_change, expires_at, is_gone
from extproc.state.errors import RecordError, SharedStateUnavailable

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisBus", "safe_url"]

log = logging.getLogger(__name__)

#: Changes sent in one pipeline at most.
BATCH = 512
#: Keys read with one MGET while loading the snapshot.
SNAPSHOT_CHUNK = 500
#: How often the subscriber makes sure Redis still answers (seconds).
HEARTBEAT = 5.0
#: The first reconnect delay (doubling up to ``reconnect_max``).
RECONNECT_MIN = 0.05

_GLOB_SPECIAL = frozenset("*?[]\\")

_Item = tuple[str, str, dict[str, Any]]


def safe_url(url: str) -> str:
    """A Redis URL without its password (for logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in _GLOB_SPECIAL else c for c in text)


class RedisBus:
    """A :class:`~extproc.state.bus.StateBus` that replicates through one Redis server."""

    shared = True

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "llmproxy:",
        queue_size: int = 10000,
        snapshot_limit: int = 100_000,
        reconnect_max: float = 5.0,
        timeout: float = 2.0,
        replica_id: str | None = None,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, not {queue_size}")
        self.url = url
        self.prefix = prefix
        self.channel = f"{prefix}events"
        self.queue_size = queue_size
        self.snapshot_limit = snapshot_limit
        self.reconnect_max = max(RECONNECT_MIN, reconnect_max)
        self.timeout = timeout
        #: Tells this replica's messages from the others' (its own are ignored).
        self.replica_id = replica_id or uuid.uuid4().hex[:16]
        #: Changes dropped because the queue was full.
        self.dropped = 0
        #: Failed attempts to reach Redis (connects, sends, snapshots).
        self.errors = 0
        #: Other replicas' changes applied (messages and snapshot records).
        self.received = 0
        #: Records that could not be encoded, decoded or applied.
        self.rejected = 0
        self._queue: deque[_Item] = deque()
        self._handlers: dict[str, Apply] = {}
        self._up = False
        self._outage = False
        self._sending = False
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._wake: asyncio.Event | None = None
        self._ready: asyncio.Event | None = None
        self._client: Redis | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._warned_kinds: set[str] = set()

    # -- what the metrics read ------------------------------------------------

    @property
    def up(self) -> bool:
        """Redis answered the last attempt (False before :meth:`start`)."""
        return self._up

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    # -- the hot path ---------------------------------------------------------

    def publish(self, kind: str, key: str, record: dict[str, Any]) -> None:
        """Queue a change for Redis: an append, never a wait (any thread)."""
        queue = self._queue
        if len(queue) >= self.queue_size:
            try:
                queue.popleft()
            except IndexError:
                pass
            else:
                self.dropped += 1
        queue.append((kind, key, record))
        wake = self._wake
        if wake is None or wake.is_set():
            return
        if threading.get_ident() == self._loop_thread:
            wake.set()
        elif self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                self._loop.call_soon_threadsafe(wake.set)

    def subscribe(self, kind: str, apply: Apply) -> None:
        self._handlers[kind] = apply

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Connect, load the snapshot and begin replicating.

        Returns once the first connection attempt succeeded or failed (at most
        about twice ``timeout``): a replica that starts while Redis is down
        serves on its local state and connects later.
        """
        if self._tasks or self._closed:
            return
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wake = asyncio.Event()
        if self._queue:
            self._wake.set()
        self._ready = asyncio.Event()
        # No retries inside the client: a failure must reach this bus at once,
        # which owns the back-off, the outage warning and the snapshot reload.
        self._client = Redis.from_url(
            self.url,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._tasks = [
            asyncio.create_task(self._subscriber(), name="shared-state-subscriber"),
            asyncio.create_task(self._publisher(), name="shared-state-publisher"),
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), 2 * self.timeout + 1)

    async def close(self) -> None:
        """Send what is queued (while Redis answers, for at most ``timeout``), then stop."""
        if self._closed:
            return
        self._closed = True
        if not self._tasks:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while (self._queue or self._sending) and self._up and loop.time() < deadline:
            await asyncio.sleep(0.005)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._up = False
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()

    # -- outage bookkeeping ---------------------------------------------------

    def _mark_up(self) -> None:
        if self._up:
            return
        self._up = True
        if self._outage:
            self._outage = False
            log.warning("shared state: Redis at %s answers again; replicating", safe_url(self.url))
        else:
            log.info("shared state: replicating through Redis at %s", safe_url(self.url))

    def _failed(self, what: str, exc: BaseException) -> None:
        self.errors += 1
        self._up = False
        if not self._outage:
            self._outage = True
            log.warning(
                "shared state: Redis at %s unavailable while %s (%s: %s); this replica goes on "
                "with its local state and keeps retrying",
                safe_url(self.url),
                what,
                type(exc).__name__,
                exc,
            )

    # -- publisher ------------------------------------------------------------

    async def _publisher(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                self._sending = True
                try:
                    await self._send_until_done(self._take())
                finally:
                    self._sending = False

    def _take(self) -> list[_Item]:
        """Up to :data:`BATCH` queued changes; the last one of each key wins."""
        latest: dict[tuple[str, str], _Item] = {}
        queue = self._queue
        for _ in range(min(BATCH, len(queue))):
            try:
                item = queue.popleft()
            except IndexError:
                break
            latest[item[0], item[1]] = item
        return list(latest.values())

    async def _send_until_done(self, batch: list[_Item]) -> None:
        delay = RECONNECT_MIN
        while batch:
            try:
                await self._send(batch)
            except (SharedStateUnavailable, OSError) as exc:
                self._failed("sending changes", exc)
            else:
                self._mark_up()
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.reconnect_max)
            now = time.time()
            batch = [
                item
                for item in batch
                if is_gone(item[2]) or (expires := expires_at(item[2])) is None or expires > now
            ]

    async def _send(self, batch: list[_Item]) -> None:
        from redis.exceptions import RedisError

        assert self._client is not None
        pipe = self._client.pipeline(transaction=False)
        now = time.time()
        for kind, key, record in batch:
            try:
                data = encode_change(Change(self.replica_id, kind, key, record))
            except RecordError as exc:
                self.rejected += 1
                log.warning("shared state: %s", exc)
                continue
            name = f"{self.prefix}{kind}:{key}"
            if is_gone(record):
                pipe.delete(name)
            else:
                expires = expires_at(record)
                if expires is None:
                    pipe.set(name, data)
                else:
                    ms = int((expires - now) * 1000)
                    if ms <= 0:
                        continue  # over already: nothing to tell
                    pipe.set(name, data, px=ms)
            pipe.publish(self.channel, data)
        try:
            await pipe.execute()
        except RedisError as exc:
            raise SharedStateUnavailable(str(exc)) from exc

    # -- subscriber -----------------------------------------------------------

    async def _subscriber(self) -> None:
        from redis.exceptions import RedisError

        assert self._client is not None and self._ready is not None
        delay = RECONNECT_MIN
        loop = asyncio.get_running_loop()
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                await self._load_snapshot()
                self._mark_up()
                self._ready.set()
                delay = RECONNECT_MIN
                beat = loop.time() + HEARTBEAT
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        await self._receive(message["data"])
                    if loop.time() >= beat:
                        await self._client.ping()
                        beat = loop.time() + HEARTBEAT
            except (RedisError, OSError) as exc:
                self._failed("listening", exc)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            self._ready.set()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.reconnect_max)

    async def _load_snapshot(self) -> None:
        """Apply the changes stored in Redis (other replicas' live state)."""
        if self.snapshot_limit <= 0:
            return
        assert self._client is not None
        names: list[bytes] = []
        async for name in self._client.scan_iter(match=_glob_escape(self.prefix) + "*", count=1000):
            names.append(name)
            if len(names) >= self.snapshot_limit:
                break
        for start in range(0, len(names), SNAPSHOT_CHUNK):
            values = await self._client.mget(names[start : start + SNAPSHOT_CHUNK])
            for value in values:
                if value is not None:
                    await self._receive(value)

    async def _receive(self, data: bytes | str) -> None:
        try:
            change = decode_change(data)
        except RecordError as exc:
            self.rejected += 1
            log.debug("shared state: %s", exc)
            return
        if change.origin == self.replica_id:
            return
        apply = self._handlers.get(change.kind)
        if apply is None:
            return
        try:
            result = apply(change.key, change.record)
            if inspect.isawaitable(result):
                await result
        except Exception:  # one bad record never stops replication
            self.rejected += 1
            if change.kind not in self._warned_kinds:
                self._warned_kinds.add(change.kind)
                log.warning(
                    "shared state: a %s change could not be applied", change.kind, exc_info=True
                )
            return
        self.received += 1

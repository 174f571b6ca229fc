"""Prometheus metrics of the extproc process (docs/observability.md).

One :class:`Metrics` object owns its own :class:`~prometheus_client.CollectorRegistry`
(never the global one, so several apps and tests coexist in a process) and
serves it on a loopback HTTP endpoint of its own (``/metrics``, Prometheus text
format) from a daemon thread.

The hot-path methods take plain arguments and cache the labelled child of each
metric per label tuple in a bounded dict, so a request costs a few dict lookups
and lock-protected additions, not a ``.labels()`` resolution per call. The
request-path metrics are the lean families of :mod:`extproc.observe.fastmetrics`
(one lock round trip per observation; the same scrape as prometheus_client's
``Counter``/``Histogram``). The
``model`` label is client-influenced (pass-through selectors let a client name
any model), so its distinct values are capped: after :data:`MODEL_LABEL_LIMIT`
values every new model is counted as ``"other"``.

Capture and usage writers run behind bounded queues; their depth and drop
counters are read at scrape time from callables registered with
:meth:`Metrics.watch_queue`.

``MetricsConfig.enabled = False`` gets a :class:`NullMetrics`: same methods,
all no-ops, nothing served.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, generate_latest, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from extproc.observe.fastmetrics import (
    FastCounter,
    FastCounterFamily,
    FastHistogram,
    FastHistogramFamily,
)

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from extproc.canonical import Usage
    from extproc.config.model import MetricsConfig

log = logging.getLogger(__name__)

__all__ = [
    "MODEL_LABEL_LIMIT",
    "OTHER",
    "REQUEST_BUCKETS",
    "STAGE_BUCKETS",
    "TTFT_BUCKETS",
    "Metrics",
    "NullMetrics",
    "StageTimer",
]

#: Distinct ``model`` label values kept; later ones become :data:`OTHER`.
MODEL_LABEL_LIMIT = 200
#: The label value that absorbs models beyond the cap.
OTHER = "other"
#: Longest model label kept verbatim (a longer name is cut, so a client cannot
#: make each of the capped values megabytes long).
MODEL_LABEL_MAX_CHARS = 120
#: Cached label children per metric; beyond it the cache starts over (the
#: metric's own children are kept, only the shortcut is rebuilt).
CHILD_CACHE_LIMIT = 4096

#: Whole requests, as seen by the client: 5 ms (a local reply) to 5 min (a long generation).
REQUEST_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
    120.0,
    180.0,
    300.0,
)
#: Processing inside extproc per step: 10 µs to 1 s.
STAGE_BUCKETS = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
#: Time to first token (first streamed content byte from the provider).
TTFT_BUCKETS = (
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
    7.5,
    10.0,
    15.0,
    20.0,
    30.0,
    60.0,
    120.0,
)

#: How often the idle HTTP server thread checks for shutdown.
_POLL_SECONDS = 0.1

_QUEUE_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")

_M = TypeVar("_M", FastCounter, FastHistogram)
_Key = TypeVar("_Key", bound=Hashable)


class _Children(dict[_Key, _M]):
    """Cache key -> labelled child, bounded (cleared when full)."""

    __slots__ = ("_labels",)

    def __init__(self, labels: Callable[..., _M]) -> None:
        super().__init__()
        self._labels: Callable[..., _M] = labels

    def get_child(self, key: _Key, labels: tuple[str, ...]) -> _M:
        if len(self) >= CHILD_CACHE_LIMIT:
            self.clear()
        child = self[key] = self._labels(*labels)
        return child


class _QueueWatch:
    __slots__ = ("depth", "dropped")

    def __init__(
        self, depth: Callable[[], float] | None, dropped: Callable[[], float] | None
    ) -> None:
        self.depth = depth
        self.dropped = dropped


class _QueueCollector(Collector):
    """Reads queue depths and drop counters from callables at scrape time."""

    def __init__(self) -> None:
        self.watches: dict[str, _QueueWatch] = {}

    def describe(self) -> Iterable[Metric]:
        # Names depend on what is watched later; an empty description keeps the
        # registry from calling collect() at registration time.
        return ()

    def collect(self) -> Iterator[Metric]:
        for name, watch in sorted(self.watches.items()):
            if watch.depth is not None and (depth := _read(watch.depth, name)) is not None:
                yield GaugeMetricFamily(
                    f"llm_proxy_{name}_queue_depth",
                    f"Records waiting in the {name} writer's queue.",
                    value=depth,
                )
            if watch.dropped is not None and (dropped := _read(watch.dropped, name)) is not None:
                yield CounterMetricFamily(
                    f"llm_proxy_{name}_dropped",
                    f"Records the {name} writer dropped (queue full or write failed).",
                    value=dropped,
                )


class _SharedStateCollector(Collector):
    """Reads the shared-state bus's health at scrape time (``state.backend: redis``)."""

    def __init__(self, up: Callable[[], float], errors: Callable[[], float]) -> None:
        self.up = up
        self.errors = errors

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterator[Metric]:
        if (up := _read(self.up, "shared_state")) is not None:
            yield GaugeMetricFamily(
                "llm_proxy_shared_state_up",
                "1 while the shared-state store (Redis) answers, 0 while this replica runs on "
                "its local state alone.",
                value=up,
            )
        if (errors := _read(self.errors, "shared_state")) is not None:
            yield CounterMetricFamily(
                "llm_proxy_shared_state_errors",
                "Failed attempts to reach the shared-state store (connects, sends, snapshots).",
                value=errors,
            )


def _read(source: Callable[[], float], name: str) -> float | None:
    try:
        return float(source())
    except Exception:  # a scrape never fails because of one callback
        log.warning("metrics: the %s queue callback failed", name, exc_info=True)
        return None


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape."""

    def log_message(self, format: str, *args: object) -> None:
        return None


class StageTimer:
    """``with metrics.stage_timer("decode"):`` observes the block's duration.

    One object per use (it holds the start time), so concurrent uses from the
    event loop and worker threads never share state.
    """

    __slots__ = ("_child", "_start")

    def __init__(self, child: FastHistogram | None) -> None:
        self._child = child
        self._start = 0.0

    def __enter__(self) -> StageTimer:
        if self._child is not None:
            self._start = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._child is not None:
            self._child.observe(time.perf_counter() - self._start)


_NULL_TIMER = StageTimer(None)


class Metrics:
    """The proxy's Prometheus metrics, on a registry of their own."""

    enabled = True

    def __init__(
        self, *, model_limit: int = MODEL_LABEL_LIMIT, runtime_collectors: bool = True
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        if runtime_collectors:
            # process_* (CPU, memory, fds), python_gc_*, python_info: the same
            # series the global registry has, on this one.
            ProcessCollector(registry=self.registry)
            GCCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
        reg = self.registry
        self.requests = FastCounterFamily(
            "llm_proxy_requests",
            "Client requests answered, by client protocol, backend instance, model, HTTP status.",
            ["frontend", "backend", "model", "status"],
            registry=reg,
        )
        self.errors = FastCounterFamily(
            "llm_proxy_errors",
            "Errors the proxy generated itself (not relayed from a provider), by error code.",
            ["frontend", "code"],
            registry=reg,
        )
        self.request_seconds = FastHistogramFamily(
            "llm_proxy_request_seconds",
            "Whole request duration as extproc saw it (first header to last byte).",
            ["frontend", "streamed"],
            buckets=REQUEST_BUCKETS,
            registry=reg,
        )
        self.stage_seconds = FastHistogramFamily(
            "llm_proxy_stage_seconds",
            "Processing time inside extproc per step (decode, pipeline stages, encode, "
            "response translation).",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=reg,
        )
        self.ttft_seconds = FastHistogramFamily(
            "llm_proxy_ttft_seconds",
            "Time to first token of streamed answers, from the client request.",
            ["frontend", "backend"],
            buckets=TTFT_BUCKETS,
            registry=reg,
        )
        self.tokens = FastCounterFamily(
            "llm_proxy_tokens",
            "Tokens reported by providers, by kind (input includes cached; output "
            "includes reasoning).",
            ["backend", "model", "kind"],
            registry=reg,
        )
        self.upstream_attempts = FastCounterFamily(
            "llm_proxy_upstream_attempts",
            "Attempts sent to backend instances (retries and failover included), by outcome.",
            ["backend", "outcome"],
            registry=reg,
        )
        self.safety_actions = FastCounterFamily(
            "llm_proxy_safety_actions",
            "What the safety stages did: secrets redacted (by direction and kind), tool calls "
            "blocked (by stage and rule), lockouts.",
            ["stage", "action", "detail"],
            registry=reg,
        )
        self.tokens_saved = FastCounterFamily(
            "llm_proxy_tokens_saved",
            "Input tokens the proxy saved by compressing requests (estimated), by stage.",
            ["stage"],
            registry=reg,
        )
        self._queues = _QueueCollector()
        reg.register(self._queues)
        self._shared_state: _SharedStateCollector | None = None

        self._model_limit = model_limit
        self._models: set[str] = set()
        self._models_lock = threading.Lock()
        self._requests: _Children[tuple[str, str, str, int | str], FastCounter] = _Children(
            self.requests.labels
        )
        self._errors: _Children[tuple[str, str], FastCounter] = _Children(self.errors.labels)
        self._request_seconds: _Children[tuple[str, bool], FastHistogram] = _Children(
            self.request_seconds.labels
        )
        self._stage_seconds: _Children[str, FastHistogram] = _Children(self.stage_seconds.labels)
        self._ttft: _Children[tuple[str, str], FastHistogram] = _Children(self.ttft_seconds.labels)
        self._tokens: dict[tuple[str, str], tuple[FastCounter, ...]] = {}
        self._attempts: _Children[tuple[str, str], FastCounter] = _Children(
            self.upstream_attempts.labels
        )
        self._safety: _Children[tuple[str, str, str], FastCounter] = _Children(
            self.safety_actions.labels
        )

        self.server: WSGIServer | None = None
        self.port = 0
        self._thread: threading.Thread | None = None

    # -- construction -------------------------------------------------------

    @classmethod
    def from_config(cls, config: MetricsConfig) -> Metrics:
        """A live :class:`Metrics`, or a :class:`NullMetrics` when disabled (not served yet)."""
        return cls() if config.enabled else NullMetrics()

    @staticmethod
    def disabled() -> Metrics:
        return NullMetrics()

    # -- hot path -----------------------------------------------------------

    def model_label(self, model: str) -> str:
        """``model`` as a label value: itself while under the cap, else ``"other"``."""
        if model in self._models:
            return model
        if len(model) > MODEL_LABEL_MAX_CHARS:
            model = model[:MODEL_LABEL_MAX_CHARS]
            if model in self._models:
                return model
        with self._models_lock:
            if len(self._models) >= self._model_limit:
                return OTHER
            self._models.add(model)
        return model

    def observe_request(
        self,
        frontend: str,
        backend: str,
        model: str,
        status: int | str,
        seconds: float,
        streamed: bool,
    ) -> None:
        """One finished client request (``backend`` ``""`` when none was chosen)."""
        key = (frontend, backend, model, status)
        counter = self._requests.get(key)
        if counter is None:
            labels = (frontend, backend, self.model_label(model), str(status))
            counter = self._requests.get_child(key, labels)
        counter.inc()
        skey = (frontend, streamed)
        hist = self._request_seconds.get(skey)
        if hist is None:
            hist = self._request_seconds.get_child(
                skey, (frontend, "true" if streamed else "false")
            )
        hist.observe(seconds)

    def count_error(self, frontend: str, code: str) -> None:
        """An error the proxy generated (its ``ProxyError.code``)."""
        key = (frontend, code)
        counter = self._errors.get(key)
        if counter is None:
            counter = self._errors.get_child(key, key)
        counter.inc()

    def observe_stage(self, stage: str, seconds: float) -> None:
        """Time spent in one extproc step (``decode``, a stage name, ``encode``...)."""
        hist = self._stage_seconds.get(stage)
        if hist is None:
            hist = self._stage_seconds.get_child(stage, (stage,))
        hist.observe(seconds)

    def stage_timer(self, stage: str) -> StageTimer:
        """A context manager observing its block into ``llm_proxy_stage_seconds``."""
        hist = self._stage_seconds.get(stage)
        if hist is None:
            hist = self._stage_seconds.get_child(stage, (stage,))
        return StageTimer(hist)

    def observe_ttft(self, frontend: str, backend: str, seconds: float) -> None:
        key = (frontend, backend)
        hist = self._ttft.get(key)
        if hist is None:
            hist = self._ttft.get_child(key, key)
        hist.observe(seconds)

    def add_tokens(self, backend: str, model: str, usage: Usage) -> None:
        """Token counts of one answer (zero counts add nothing)."""
        key = (backend, model)
        children = self._tokens.get(key)
        if children is None:
            if len(self._tokens) >= CHILD_CACHE_LIMIT:
                self._tokens.clear()
            label = self.model_label(model)
            children = self._tokens[key] = tuple(
                self.tokens.labels(backend, label, kind)
                for kind in ("input", "output", "cached", "reasoning", "cache_write")
            )
        if usage.input_tokens:
            children[0].inc(usage.input_tokens)
        if usage.output_tokens:
            children[1].inc(usage.output_tokens)
        if usage.cached_input_tokens:
            children[2].inc(usage.cached_input_tokens)
        if usage.reasoning_tokens:
            children[3].inc(usage.reasoning_tokens)
        if usage.cache_write_tokens:
            children[4].inc(usage.cache_write_tokens)

    def count_attempt(self, backend: str, outcome: str) -> None:
        """One upstream attempt and how it ended (``ok``, ``retry``, ``error``...)."""
        key = (backend, outcome)
        counter = self._attempts.get(key)
        if counter is None:
            counter = self._attempts.get_child(key, key)
        counter.inc()

    def count_safety(self, stage: str, action: str, detail: str, count: int = 1) -> None:
        """A safety stage acted, e.g. ``("commands", "blocked", "git-reset-hard")``."""
        key = (stage, action, detail)
        counter = self._safety.get(key)
        if counter is None:
            counter = self._safety.get_child(key, key)
        counter.inc(count)

    def save_tokens(self, stage: str, tokens: int) -> None:
        """A stage made a request smaller by about ``tokens`` input tokens."""
        self.tokens_saved.labels(stage).inc(tokens)

    # -- callbacks ------------------------------------------------------------

    def watch_queue(
        self,
        name: str,
        *,
        depth: Callable[[], float] | None = None,
        dropped: Callable[[], float] | None = None,
    ) -> None:
        """Expose ``llm_proxy_<name>_queue_depth`` / ``llm_proxy_<name>_dropped_total``.

        The callables run at scrape time on the HTTP server's thread; they must
        be cheap and thread-safe (``queue.qsize``, reading an int). Watching a
        name again replaces its callables; both ``None`` stops watching it.
        """
        if not _QUEUE_NAME_RE.match(name):
            raise ValueError(f"queue name {name!r} must match {_QUEUE_NAME_RE.pattern}")
        if depth is None and dropped is None:
            self._queues.watches.pop(name, None)
        else:
            self._queues.watches[name] = _QueueWatch(depth, dropped)

    def watch_shared_state(self, *, up: Callable[[], float], errors: Callable[[], float]) -> None:
        """Expose ``llm_proxy_shared_state_up`` and ``llm_proxy_shared_state_errors_total``.

        Read at scrape time (cheap, thread-safe callables); watching again
        replaces the callables.
        """
        if self._shared_state is None:
            self._shared_state = _SharedStateCollector(up, errors)
            self.registry.register(self._shared_state)
        else:
            self._shared_state.up, self._shared_state.errors = up, errors

    # -- exposition -----------------------------------------------------------

    def serve(self, host: str = "127.0.0.1", port: int = 9464) -> tuple[WSGIServer | None, int]:
        """Serve ``/metrics`` (Prometheus text format) from a daemon thread.

        ``port`` 0 picks a free port. Returns the server and the port it is bound to.
        """
        if self.server is not None:
            raise RuntimeError(f"metrics already served on port {self.port}")
        family, _, _, _, sockaddr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]

        class _Server(ThreadingWSGIServer):
            address_family = family

        server = make_server(
            str(sockaddr[0]), port, make_wsgi_app(self.registry), _Server, _QuietHandler
        )
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _POLL_SECONDS},
            name="llm-proxy-metrics",
            daemon=True,
        )
        thread.start()
        self.server, self._thread = server, thread
        self.port = server.server_port
        return server, self.port

    def shutdown(self) -> None:
        """Stop serving (idempotent)."""
        server, thread = self.server, self._thread
        self.server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def exposition(self) -> bytes:
        """The current scrape, in the Prometheus text format (tests, debugging)."""
        return generate_latest(self.registry)


class NullMetrics(Metrics):
    """Metrics turned off: every method is a no-op; nothing is registered or served."""

    enabled = False

    def __init__(self) -> None:  # no super().__init__: no metric objects at all
        self.registry = CollectorRegistry(auto_describe=True)
        self.server = None
        self.port = 0
        self._thread = None

    def model_label(self, model: str) -> str:
        return model

    def observe_request(
        self,
        frontend: str,
        backend: str,
        model: str,
        status: int | str,
        seconds: float,
        streamed: bool,
    ) -> None:
        return None

    def count_error(self, frontend: str, code: str) -> None:
        return None

    def observe_stage(self, stage: str, seconds: float) -> None:
        return None

    def stage_timer(self, stage: str) -> StageTimer:
        return _NULL_TIMER

    def observe_ttft(self, frontend: str, backend: str, seconds: float) -> None:
        return None

    def add_tokens(self, backend: str, model: str, usage: Usage) -> None:
        return None

    def count_attempt(self, backend: str, outcome: str) -> None:
        return None

    def count_safety(self, stage: str, action: str, detail: str, count: int = 1) -> None:
        return None

    def save_tokens(self, stage: str, tokens: int) -> None:
        return None

    def watch_queue(
        self,
        name: str,
        *,
        depth: Callable[[], float] | None = None,
        dropped: Callable[[], float] | None = None,
    ) -> None:
        return None

    def watch_shared_state(self, *, up: Callable[[], float], errors: Callable[[], float]) -> None:
        return None

    def serve(self, host: str = "127.0.0.1", port: int = 9464) -> tuple[WSGIServer | None, int]:
        return None, 0

    def shutdown(self) -> None:
        return None

    def exposition(self) -> bytes:
        return b""

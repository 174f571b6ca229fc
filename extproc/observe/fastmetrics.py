"""Lean Prometheus counters and histograms for the request path.

prometheus_client takes a mutex per value (a histogram observation takes two
and walks its buckets in Python). Here each labelled child keeps plain numbers
behind its family's one lock: an observation is a ``bisect`` and a single lock
round trip (``acquire``/``release``, half the cost of ``with lock``), and a
scrape copies a family under the same lock (a consistent snapshot). Each
family is a collector producing exactly the samples a prometheus_client
``Counter``/``Histogram`` of the same name, labels and buckets would
(``_total``, ``_created``; ``_bucket``, ``_count``, ``_sum``, ``_created``),
so the scrape does not change.
"""

from __future__ import annotations

import re
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, TypeVar

from prometheus_client import metrics as _prom_metrics
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import INF, floatToGoString

__all__ = ["FastCounter", "FastCounterFamily", "FastHistogram", "FastHistogramFamily"]

_LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
#: How prometheus_client writes a bucket bound (``1.0``, ``2.5e-05``, ``+Inf``).
_go_float: Callable[[float], str] = floatToGoString


class FastCounter:
    """One labelled counter series."""

    __slots__ = ("_lock", "created", "labelvalues", "value")

    def __init__(self, lock: threading.Lock, labelvalues: tuple[str, ...]) -> None:
        self._lock = lock
        self.labelvalues = labelvalues
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        """Add ``amount`` (non-negative)."""
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        lock = self._lock
        lock.acquire()
        try:
            self.value += amount
        finally:
            lock.release()

    def get(self) -> float:
        with self._lock:
            return self.value


class FastHistogram:
    """One labelled histogram series: per-bucket (not cumulative) counts and the sum.

    ``counts`` has a slot past the ``+Inf`` bucket for NaN observations, which
    prometheus_client adds to the sum but counts in no bucket; it is not exposed.
    """

    __slots__ = ("_bounds", "_lock", "_nan", "counts", "created", "labelvalues", "total")

    def __init__(
        self, lock: threading.Lock, labelvalues: tuple[str, ...], bounds: tuple[float, ...]
    ) -> None:
        self._lock = lock
        self._bounds = bounds
        self.labelvalues = labelvalues
        self._nan = len(bounds)
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        """Count ``amount`` in the first bucket whose bound is >= it (NaN: in none)."""
        i = bisect_left(self._bounds, amount)
        if not i and amount != amount:  # NaN lands at 0 too
            i = self._nan
        lock = self._lock
        lock.acquire()
        try:
            self.counts[i] += 1
            self.total += amount
        finally:
            lock.release()


_C = TypeVar("_C", FastCounter, FastHistogram)


class _Family(Collector, Generic[_C]):
    """A labelled metric: its children by label values, and their exposition."""

    _type = ""
    _reserved: tuple[str, ...] = ()

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry | None,
    ) -> None:
        if self._type == "counter" and name.endswith("_total"):
            name = name[:-6]
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        for label in self.labelnames:
            if not _LABEL_NAME_RE.match(label) or label.startswith("__") or label in self._reserved:
                raise ValueError(f"invalid label name {label!r}")
        self._describe = Metric(name, documentation, self._type)  # validates the name
        self._lock = threading.Lock()
        self._children: dict[tuple[str, ...], _C] = {}
        if registry is not None:
            registry.register(self)

    def labels(self, *labelvalues: object) -> _C:
        """The child of these label values (made on first use)."""
        if len(labelvalues) != len(self.labelnames):
            raise ValueError("Incorrect label count")
        values = tuple(str(v) for v in labelvalues)
        child = self._children.get(values)
        if child is None:
            with self._lock:
                child = self._children.get(values)
                if child is None:
                    child = self._children[values] = self._new(values)
        return child

    def _new(self, values: tuple[str, ...]) -> _C:
        raise NotImplementedError

    def describe(self) -> Iterable[Metric]:
        return [self._describe]


class FastCounterFamily(_Family[FastCounter]):
    """A labelled counter, exposed as prometheus_client's ``Counter`` would be."""

    _type = "counter"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        registry: CollectorRegistry | None,
    ) -> None:
        super().__init__(name, documentation, labelnames, registry)

    def _new(self, values: tuple[str, ...]) -> FastCounter:
        return FastCounter(self._lock, values)

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            rows = [(c.labelvalues, c.value, c.created) for c in self._children.values()]
        metric = Metric(self.name, self.documentation, self._type)
        total, created = self.name + "_total", self.name + "_created"
        use_created = _prom_metrics._use_created
        for values, value, created_at in rows:
            metric.add_sample(total, dict(zip(self.labelnames, values, strict=True)), value)
            if use_created:
                labels = dict(zip(self.labelnames, values, strict=True))
                metric.add_sample(created, labels, created_at)
        return [metric]


class FastHistogramFamily(_Family[FastHistogram]):
    """A labelled histogram, exposed as prometheus_client's ``Histogram`` would be."""

    _type = "histogram"
    _reserved = ("le",)

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry | None,
    ) -> None:
        bounds = [float(b) for b in buckets]
        if bounds != sorted(bounds):
            raise ValueError("Buckets not in sorted order")
        if bounds and bounds[-1] != INF:
            bounds.append(INF)
        if len(bounds) < 2:
            raise ValueError("Must have at least two buckets")
        self.bounds = tuple(bounds)
        self._le = tuple(_go_float(b) for b in bounds)
        super().__init__(name, documentation, labelnames, registry)

    def _new(self, values: tuple[str, ...]) -> FastHistogram:
        return FastHistogram(self._lock, values, self.bounds)

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            rows = [
                (c.labelvalues, c.counts.copy(), c.total, c.created)
                for c in self._children.values()
            ]
        name, names, le = self.name, self.labelnames, self._le
        metric = Metric(name, self.documentation, self._type)
        bucket = name + "_bucket"
        use_created = _prom_metrics._use_created
        with_sum = self.bounds[0] >= 0
        for values, counts, total, created_at in rows:
            acc = 0.0
            for bound, count in zip(le, counts, strict=False):  # not the NaN slot
                acc += count
                labels = dict(zip(names, values, strict=True))
                labels["le"] = bound
                metric.add_sample(bucket, labels, acc)
            metric.add_sample(name + "_count", dict(zip(names, values, strict=True)), acc)
            if with_sum:
                metric.add_sample(name + "_sum", dict(zip(names, values, strict=True)), total)
            if use_created:
                metric.add_sample(
                    name + "_created", dict(zip(names, values, strict=True)), created_at
                )
        return [metric]

"""Which backend instance each attempt of a request went to.

The UPSTREAM role runs once per attempt and knows the instance Envoy chose;
the ROUTER role learns at the answer how many attempts there were
(``x-envoy-attempt-count``). This bounded log joins the two when both roles
run in this process (the embedded proxy and sidecars); elsewhere the
attempts are still counted, without their instances. A first attempt that
skips the UPSTREAM role (a pool of alike hosts) is logged by the ROUTER role
as ``""``: counted, its instance unknown.
"""

from __future__ import annotations

import threading
from collections import OrderedDict


class AttemptLog:
    """request id -> instances of its attempts, in order; bounded, oldest first out."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._log: OrderedDict[str, list[str]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, request_id: str, instance: str) -> None:
        if not request_id:
            return
        with self._lock:
            self._log.setdefault(request_id, []).append(instance)
            while len(self._log) > self.limit:
                self._log.popitem(last=False)

    def pop(self, request_id: str) -> list[str]:
        with self._lock:
            return self._log.pop(request_id, [])

"""The proxy's own admin endpoints: diagnostics, backend reactivation, usage, reload.

``GET /v1/diagnostics``, ``GET /v1/diagnostics/sessions``,
``POST /v1/diagnostics/backends/{instance}/reactivate``,
``GET /v1/usage/stats``, ``GET /v1/usage/recent`` and ``POST /v1/admin/reload``.
In multi-user mode they answer admin keys only (and fail closed when none is configured); the ROUTER
role hands them the request before any client-key stage runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from hmac import compare_digest
from typing import Any
from urllib.parse import unquote

from extproc.errors import AuthenticationFailed, NotFound
from extproc.observe.usage import UsageRecorder, handle_usage_query

__all__ = ["AdminAnswer", "AdminEndpoints", "ReloadHook"]

#: ``(status, JSON-able body)``, now or later.
AdminAnswer = tuple[int, Any] | Awaitable[tuple[int, Any]]
#: ``POST /v1/admin/reload``: re-read the config and switch to it, ``(status, body)``.
ReloadHook = Callable[[], Awaitable[tuple[int, dict[str, Any]]]]


class AdminEndpoints:
    def __init__(
        self,
        *,
        admin_keys: tuple[bytes, ...],
        multi_user: bool,
        diagnostics: Callable[[dict[str, str]], Awaitable[dict[str, Any]]],
        reactivate: Callable[[str], dict[str, Any]],
        usage: UsageRecorder | None,
        sessions: Callable[[dict[str, str]], Awaitable[dict[str, Any]]] | None = None,
    ) -> None:
        self._keys = admin_keys
        self._multi_user = multi_user
        self._diagnostics = diagnostics
        self._reactivate = reactivate
        self._usage = usage
        self._sessions = sessions
        #: Set by the composition root when the config can be re-read (a file).
        self.reload_hook: ReloadHook | None = None

    def handle(
        self, params: Mapping[str, str], key: str | None, query: dict[str, str]
    ) -> AdminAnswer:
        """Answer one admin request (raises a ProxyError for the client's dialect)."""
        self._admit(key)
        name = params["admin"]
        if name == "diagnostics":
            return self._later(self._diagnostics(query))
        if name == "diagnostics/sessions":
            if self._sessions is None:
                raise NotFound(
                    "sessions are off; turn them on with 'sessions: {enabled: true}'",
                    code="sessions_disabled",
                )
            return self._later(self._sessions(query))
        if name == "admin/reload":
            if self.reload_hook is None:
                raise NotFound(
                    "reload needs a proxy started with --config FILE",
                    code="reload_unavailable",
                )
            return self.reload_hook()
        if name == "diagnostics/backends":
            return 200, self._reactivate(unquote(params.get("instance", "")))
        usage = self._usage
        if usage is None:
            raise NotFound(
                "usage accounting is off; turn it on with 'usage: {enabled: true}' in the config",
                code="usage_disabled",
            )
        path = f"/v1/{name}"
        return asyncio.to_thread(handle_usage_query, usage, path, query)

    async def _later(self, pending: Awaitable[dict[str, Any]]) -> tuple[int, Any]:
        return 200, await pending

    def _admit(self, key: str | None) -> None:
        if not self._keys and self._multi_user:
            # Fail closed: on a shared network these endpoints are for admins only.
            raise AuthenticationFailed(
                "this endpoint needs an admin key; set admin_keys in the proxy config",
                code="invalid_admin_key",
            )
        presented = (key or "").encode("utf-8", "surrogateescape")
        admitted = key is not None and any(compare_digest(presented, k) for k in self._keys)
        if self._keys and not admitted:
            raise AuthenticationFailed(
                "this endpoint needs an admin key (admin_keys in the proxy config)",
                code="invalid_admin_key",
            )

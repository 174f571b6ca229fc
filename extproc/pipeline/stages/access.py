"""Access control: in multi-user mode every request needs a proxy key.

Keys may be listed as themselves or as ``sha256:<hex>`` digests. Failed
attempts lock out the client address and the presented key with a doubling
back-off (``auth.lockout``): a locked client gets 429 with ``retry-after``
whatever key it sends. The address is the one Envoy saw (the right-most
``x-forwarded-for`` entry Envoy appended, or further left only through
``auth.trusted_hops`` proxies), never what the client wrote. Per-key model
allow-lists (``key_policies``) are checked once the body names the model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from extproc.auth import KeyRing, Lockout, client_address
from extproc.canonical import CanonicalRequest
from extproc.errors import AuthenticationFailed, PermissionDenied, TooManyAttempts
from extproc.pipeline.context import RequestContext
from extproc.pipeline.stage import RequestOutcome, Stage
from extproc.pipeline.stages.policies import KeyPolicies

__all__ = ["AccessControlStage"]


class AccessControlStage(Stage):
    name = "access"

    def __init__(
        self,
        api_keys: Iterable[str],
        *,
        lockout: Lockout | None = None,
        trusted_hops: int = 0,
        policies: KeyPolicies | None = None,
    ) -> None:
        self._keys = KeyRing(api_keys)
        self._lockout = lockout
        self._hops = trusted_hops
        self._policies = policies

    def on_request_headers(self, ctx: RequestContext, headers: Mapping[str, str]) -> None:
        key = ctx.client_key
        lockout = self._lockout
        address = client_address(headers, self._hops) if lockout is not None else ""
        key_id = ctx.client_key_id
        if lockout is not None:
            wait = lockout.retry_after(address, key_id)
            if wait is not None:
                raise _locked(wait)
        if not key:
            self._failed(address, key_id)
            raise AuthenticationFailed(
                "missing API key: send your proxy key as 'Authorization: Bearer <key>'"
            )
        if not self._keys.match(key):
            self._failed(address, key_id)
            raise AuthenticationFailed("incorrect API key provided")
        if lockout is not None:
            lockout.success(address, key_id)

    def on_request(self, ctx: RequestContext, request: CanonicalRequest) -> RequestOutcome:
        policies = self._policies
        if policies is not None and not policies.model_allowed(ctx, request.model):
            raise PermissionDenied(
                f"this API key may not use the model {request.model!r}",
                code="model_not_allowed",
                param="model",
            )
        return None

    def _failed(self, address: str, key_id: str | None) -> None:
        if self._lockout is None:
            return
        wait = self._lockout.failure(address, key_id)
        if wait is not None:
            raise _locked(wait)


def _locked(wait: float) -> TooManyAttempts:
    seconds = max(1, math.ceil(wait))
    return TooManyAttempts(
        f"too many failed API key attempts; try again in {seconds} s",
        headers={"retry-after": str(seconds)},
    )

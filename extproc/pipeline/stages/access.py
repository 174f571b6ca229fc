"""Access control: in multi-user mode every request needs a proxy key."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping

from extproc.errors import AuthenticationFailed
from extproc.pipeline.context import RequestContext
from extproc.pipeline.stage import Stage


class AccessControlStage(Stage):
    name = "access"

    def __init__(self, api_keys: Iterable[str]) -> None:
        self._digests = [hashlib.sha256(k.encode()).digest() for k in api_keys]

    def on_request_headers(self, ctx: RequestContext, headers: Mapping[str, str]) -> None:
        key = ctx.client_key
        if not key:
            raise AuthenticationFailed(
                "missing API key: send your proxy key as 'Authorization: Bearer <key>'"
            )
        digest = hashlib.sha256(key.encode()).digest()
        # Compare against every key so timing does not reveal which matched.
        matched = False
        for known in self._digests:
            matched |= hmac.compare_digest(digest, known)
        if not matched:
            raise AuthenticationFailed("incorrect API key provided")

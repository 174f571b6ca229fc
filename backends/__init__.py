"""The backend catalog: each provider ``type`` as data plus small hooks.

A backend *type* says where a provider lives by default, how it
authenticates, which wire schema it speaks and what quirks it has. A backend
*instance* (``openai``, ``openai.1``) is a configured account of a type; see
:mod:`extproc.config`.
"""

from backends.catalog import (
    AUTH_STYLES,
    CATALOG,
    SCHEMAS,
    AuthStyle,
    BackendType,
    RequestQuirks,
    get_type,
)

__all__ = [
    "AUTH_STYLES",
    "CATALOG",
    "SCHEMAS",
    "AuthStyle",
    "BackendType",
    "RequestQuirks",
    "get_type",
]

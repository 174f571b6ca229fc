"""Envoy configuration, generated from the proxy's config."""

from extproc.envoy_config.bootstrap import (
    bootstrap_generation,
    build_bootstrap,
    default_ca_file,
    render,
)

__all__ = ["bootstrap_generation", "build_bootstrap", "default_ca_file", "render"]

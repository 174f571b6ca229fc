"""Envoy configuration, generated from the proxy's config."""

from extproc.envoy_config.bootstrap import build_bootstrap, default_ca_file, render

__all__ = ["build_bootstrap", "default_ca_file", "render"]

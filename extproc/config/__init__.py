"""Configuration: one YAML file, validated by pydantic, with CLI overrides."""

from extproc.config.loader import build_config, load_config, substitute_env
from extproc.config.model import (
    BackendConfig,
    CaptureConfig,
    Config,
    HealthCheckConfig,
    LimitsConfig,
    MetricsConfig,
    ModelRouteConfig,
    PriceConfig,
    TimeoutsConfig,
    TracingConfig,
    UsageConfig,
)

__all__ = [
    "BackendConfig",
    "CaptureConfig",
    "Config",
    "HealthCheckConfig",
    "LimitsConfig",
    "MetricsConfig",
    "ModelRouteConfig",
    "PriceConfig",
    "TimeoutsConfig",
    "TracingConfig",
    "UsageConfig",
    "build_config",
    "load_config",
    "substitute_env",
]

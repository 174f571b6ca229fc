"""Configuration: one YAML file, validated by pydantic, with CLI overrides."""

from extproc.config.loader import build_config, load_config, substitute_env
from extproc.config.model import (
    BackendConfig,
    CaptureConfig,
    Config,
    MetricsConfig,
    PriceConfig,
    TracingConfig,
    UsageConfig,
    HealthCheckConfig,
    LimitsConfig,
    ModelRouteConfig,
    TimeoutsConfig,
)

__all__ = [
    "BackendConfig",
    "CaptureConfig",
    "Config",
    "MetricsConfig",
    "PriceConfig",
    "TracingConfig",
    "UsageConfig",
    "HealthCheckConfig",
    "LimitsConfig",
    "ModelRouteConfig",
    "TimeoutsConfig",
    "build_config",
    "load_config",
    "substitute_env",
]

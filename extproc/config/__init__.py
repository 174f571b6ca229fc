"""Configuration: one YAML file, validated by pydantic, with CLI overrides."""

from extproc.config.loader import build_config, load_config, substitute_env
from extproc.config.model import (
    BackendConfig,
    CaptureConfig,
    Config,
    HealthCheckConfig,
    HealthPolicyConfig,
    LimitsConfig,
    MetricsConfig,
    ModelRouteConfig,
    PriceConfig,
    RewriteRule,
    RoutingConfig,
    TimeoutsConfig,
    TracingConfig,
    UsageConfig,
)

__all__ = [
    "BackendConfig",
    "CaptureConfig",
    "Config",
    "HealthCheckConfig",
    "HealthPolicyConfig",
    "LimitsConfig",
    "MetricsConfig",
    "ModelRouteConfig",
    "PriceConfig",
    "RewriteRule",
    "RoutingConfig",
    "TimeoutsConfig",
    "TracingConfig",
    "UsageConfig",
    "build_config",
    "load_config",
    "substitute_env",
]

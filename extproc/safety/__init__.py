"""Agent safety: engines the safety stages use (pure: no gRPC, no Envoy)."""

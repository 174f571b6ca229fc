"""Agent guards: pure engines that notice a model or an agent going astray (loops, broken
tool calls) and keep its context small. No gRPC, no Envoy: stages call them."""

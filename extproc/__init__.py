"""LLM interactive proxy: the Python ext_proc service behind Envoy.

Envoy owns sockets, TLS, HTTP, load balancing, retries, health checks and
failover; this package owns meaning: protocols, policy, routing decisions and
the canonical model that every protocol translates through.
"""

__version__ = "0.1.0"

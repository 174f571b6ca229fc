"""Observability: wire capture, usage and cost, metrics, tracing.

Each module has one job and is fed by the processors; nothing here blocks a
request: writers run on their own threads behind bounded queues.
"""

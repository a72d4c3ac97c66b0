"""Prometheus metrics, health, structured logging."""

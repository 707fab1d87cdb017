"""The web listener: monitor, JSON API, Prometheus metrics and health."""

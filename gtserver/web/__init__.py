"""The ``web`` listener: the experimenter's live monitor, its controls and JSON
API, and the mounts of Prometheus metrics and the health check (docs/web.md)."""

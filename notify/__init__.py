"""Draining the notification outbox into a channel (file or log here; SMS / e-mail gateways later)."""

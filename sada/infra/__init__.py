"""Shared adapters: topics, the embedded broker, settings, metrics, HTTP, validation."""

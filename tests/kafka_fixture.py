"""Placeholder: the session-scoped real Kafka broker fixture is being written."""

"""Plumbing shared by the services: configuration, event-log transports, the ClickHouse client,
the registry, metrics, dead letters and the local Kafka broker runner. Knows no service."""

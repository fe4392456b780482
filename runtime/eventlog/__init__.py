"""Event-log backends behind one interface: SQLite (embedded) and Kafka (distributed)."""

from __future__ import annotations

from .base import Consumer, EventLog, LogUnavailable, Record, TopicPartition


def open_eventlog(config) -> EventLog:
    """The log the configuration names: Kafka when PINGSTREAM_KAFKA is set, else SQLite."""
    if config.kafka:
        return kafka_log_class(config.kafka_client)(
            config.kafka,
            default_partitions=config.partitions,
            prefix=config.kafka_prefix,
            ack_timeout_s=config.kafka_ack_timeout_s,
            producers=config.kafka_producers,
            consumer_client=config.kafka_consumer,
        )
    from .sqlite import SqliteEventLog

    return SqliteEventLog(config.sqlite_path, default_partitions=config.partitions)


def kafka_log_class(client: str) -> type:
    """The Kafka log whose records ``client`` sends (``PINGSTREAM_KAFKA_CLIENT``): aiokafka's or librdkafka's."""
    if client == "librdkafka":
        from .rdkafka import RdKafkaEventLog

        return RdKafkaEventLog
    if client != "aiokafka":
        raise ValueError(f"no Kafka client {client!r}")
    from .kafka import KafkaEventLog

    return KafkaEventLog


__all__ = ["Consumer", "EventLog", "LogUnavailable", "Record", "TopicPartition", "kafka_log_class", "open_eventlog"]

"""Event-log backends behind one interface: SQLite (embedded) and Kafka (distributed)."""

from __future__ import annotations

from .base import Consumer, EventLog, LogUnavailable, Record, TopicPartition


def open_eventlog(config) -> EventLog:
    """The log the configuration names: Kafka when PINGSTREAM_KAFKA is set, else SQLite."""
    if config.kafka:
        if config.kafka_client == "librdkafka":
            from .rdkafka import RdKafkaEventLog as KafkaEventLog
        else:
            from .kafka import KafkaEventLog

        return KafkaEventLog(
            config.kafka,
            default_partitions=config.partitions,
            prefix=config.kafka_prefix,
            ack_timeout_s=config.kafka_ack_timeout_s,
            producers=config.kafka_producers,
        )
    from .sqlite import SqliteEventLog

    return SqliteEventLog(config.sqlite_path, default_partitions=config.partitions)


__all__ = ["Consumer", "EventLog", "LogUnavailable", "Record", "TopicPartition", "open_eventlog"]

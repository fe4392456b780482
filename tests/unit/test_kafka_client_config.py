"""PINGSTREAM_KAFKA_CLIENT chooses what sends records to Kafka (nothing connects here: the logs are only built)."""

from __future__ import annotations

import pytest

from runtime.config import Config, ConfigError
from runtime.eventlog import open_eventlog
from runtime.eventlog.kafka import KafkaEventLog
from runtime.eventlog.rdkafka import RdKafkaEventLog

KAFKA = {"PINGSTREAM_KAFKA": "127.0.0.1:9092", "PINGSTREAM_KAFKA_PRODUCERS": "3"}


def test_aiokafka_is_the_default_with_its_producer_lanes():
    log = open_eventlog(Config.from_env(KAFKA))
    assert type(log) is KafkaEventLog and log.lanes == 3


def test_librdkafka_sends_through_one_pipelined_producer():
    log = open_eventlog(Config.from_env({**KAFKA, "PINGSTREAM_KAFKA_CLIENT": "LibRdKafka "}))
    assert isinstance(log, RdKafkaEventLog) and log.lanes == 1


def test_an_unknown_client_is_a_configuration_error():
    with pytest.raises(ConfigError, match="PINGSTREAM_KAFKA_CLIENT='kafka-python': expected one of aiokafka, librdkafka"):
        Config.from_env({**KAFKA, "PINGSTREAM_KAFKA_CLIENT": "kafka-python"})

"""The project's own Kafka broker launcher (runtime.kafkabroker)."""

from __future__ import annotations

import socket

import pytest

from runtime import kafkabroker

pytestmark = pytest.mark.kafka


def test_a_port_taken_between_picking_and_binding_is_retried_on_fresh_ports(tmp_path, monkeypatch):
    """free_port() only says a port was free a moment ago; should another process take it before the
    broker binds, the first start moves to fresh ports instead of failing the whole test session."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        real = kafkabroker.free_port
        picks = iter([taken])
        monkeypatch.setattr(kafkabroker, "free_port", lambda avoid=None: next(picks, None) or real(avoid))
        broker = kafkabroker.Broker(tmp_path / "broker")
        assert broker.port == taken  # the broker is handed the squatted port
        try:
            broker.start()
            assert taken not in (broker.port, broker.controller_port)
            with socket.create_connection(("127.0.0.1", broker.port), timeout=2):
                pass
            assert broker.process is not None and broker.process.poll() is None
        finally:
            broker.stop()


def test_cluster_ids_never_look_like_an_option_and_the_storage_tool_takes_one():
    """The storage tool's parser takes an id starting with "-" for an option and fails: ids are
    drawn again until they do not (as Kafka's Uuid.randomUuid does). One id in 64 started so."""
    import base64

    from runtime.kafkabroker import new_cluster_id

    ids = [new_cluster_id() for _ in range(5000)]
    assert not any(i.startswith("-") for i in ids)
    assert all(len(i) == 22 and len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)


def test_the_broker_has_threads_for_this_machine_not_a_servers(tmp_path, monkeypatch):
    """Request handler and network threads follow the cores (Kafka's 8 and 3 are for a server), and the
    durability setting stays: the single node fsyncs what it acknowledges."""

    def properties(cores: int) -> dict[str, str]:
        monkeypatch.setattr(kafkabroker, "_cores", lambda: cores)
        broker = kafkabroker.Broker(tmp_path / f"cores{cores}")
        broker.workdir.mkdir(parents=True)
        text = broker._properties().read_text()
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    two, sixteen = properties(2), properties(16)
    assert (two["num.io.threads"], two["num.network.threads"]) == ("2", "2")
    assert (sixteen["num.io.threads"], sixteen["num.network.threads"]) == ("8", "3")
    assert two["log.flush.interval.messages"] == sixteen["log.flush.interval.messages"] == "1"

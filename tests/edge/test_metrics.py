"""GET /metrics: Prometheus text with the edge's counters moving as pings arrive."""

from prometheus_client.parser import text_string_to_metric_families


def _samples(text: str) -> dict:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_count_pings_responses_and_produce_latency(edge):
    check = await edge.add_check()
    before = _samples(await (await edge.client.get("/metrics")).text())
    for path in ("", "/start", "/fail"):
        assert (await edge.client.get(f"/ping/{check.id}{path}")).status == 200
    assert (await edge.client.get("/ping/not-a-uuid")).status in (400, 404)
    response = await edge.client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    after = _samples(await response.text())

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert delta("pingstream_pings_total", kind="success", source="ping") == 1
    assert delta("pingstream_pings_total", kind="start", source="ping") == 1
    assert delta("pingstream_pings_total", kind="fail", source="ping") == 1
    assert delta("pingstream_http_responses_total", endpoint="ping", code="200") == 3
    assert delta("pingstream_log_produce_seconds_count", backend="sqlite") >= 3
    assert "Access-Control-Allow-Origin" not in response.headers

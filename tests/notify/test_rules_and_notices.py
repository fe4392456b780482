"""The alert says which rule fired (``rule``) and why it is held (``held``), and a check's Flapping and
Broken events and the volume gate's IngestAnomaly reach the channels that chose them: a real embedded
log, a real local HTTP receiver."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from checks.channels import channel_from_spec
from checks.spec import SpecError
from schemas.events import TOPIC_TRANSITIONS, Broken, Flapping, IngestAnomaly, encode, stable_id, utcnow, uuid7
from tests.notify.receivers import http_receiver
from tests.notify.rig import rig


def test_channel_events_accept_the_new_opt_ins_and_keep_the_default():
    made = channel_from_spec({"kind": "email", "email": "a@example.com", "events": ["flapping", "broken",
                                                                                   "ingest_anomaly"]},
                             id="c", project_id="p", created=utcnow())
    assert made.events == ("flapping", "broken", "ingest_anomaly")
    plain = channel_from_spec({"kind": "email", "email": "a@example.com"}, id="c", project_id="p", created=utcnow())
    assert plain.events == ("down", "up")
    with pytest.raises(SpecError, match="'events' has unexpected value"):
        channel_from_spec({"kind": "email", "email": "a@example.com", "events": ["flap"]},
                          id="c", project_id="p", created=utcnow())


async def test_the_alert_names_the_rule_that_fired(tmp_path):
    async with rig(tmp_path) as r, http_receiver() as rx:
        await r.channel(kind="webhook", url=rx.url + "/doc")
        await r.channel(kind="webhook", url=rx.url + "/tpl", body="$STATUS|$RULE|$REASON")
        check = await r.check(name="flaky")
        await r.start()
        ping = await r.ping(check, "fail")
        t = await r.transition(check, "up", "down", "fail ping", cause=ping, rule="failure_threshold")
        plain = await r.ping(check, "success")
        await r.transition(check, "down", "up", "success ping", cause=plain)
        await rx.wait_for(lambda: len(rx.at("/doc")) == 2 and len(rx.at("/tpl")) == 2)
        down, up = (json.loads(g.body) for g in rx.at("/doc"))
        assert down["id"] == t.event_id
        assert (down["transition"]["rule"], down["transition"]["held"]) == ("failure_threshold", None)
        assert up["transition"]["rule"] is None
        assert [g.body.decode() for g in rx.at("/tpl")] == ["down|failure_threshold|fail ping", "up||success ping"]


async def test_a_held_transition_is_recorded_held_and_not_sent(tmp_path):
    async with rig(tmp_path) as r, http_receiver() as rx:
        hook = await r.channel(kind="webhook", url=rx.url + "/hook")
        check = await r.check(name="snoozed")
        await r.start()
        held = await r.transition(check, "up", "down", held="snooze", rule="max_runtime")
        (d,) = await r.wait_deliveries(1)
        assert (d.alert_id, d.channel_id, d.status, d.attempts, d.error) == (held.event_id, hook.id, "held", 0, "snooze")
        assert rx.received == []


async def test_a_down_announced_at_its_windows_end_is_sent_as_a_down_saying_so(tmp_path):
    async with rig(tmp_path) as r, http_receiver() as rx:
        await r.channel(kind="webhook", url=rx.url + "/doc")
        await r.channel(kind="webhook", url=rx.url + "/tpl", body="$EVENT|$STATUS|$RULE")
        check = await r.check(name="nightly")
        await r.start()
        await r.transition(check, "up", "down", held="maintenance")
        end = await r.transition(check, "down", "down", "still down when the maintenance window ended",
                                 rule="window_end", released_from="maintenance")
        await rx.wait_for(lambda: len(rx.at("/doc")) == 1 and len(rx.at("/tpl")) == 1)
        (doc,) = (json.loads(g.body) for g in rx.at("/doc"))
        assert (doc["id"], doc["event"], doc["status"]) == (end.event_id, "down", "down")
        assert (doc["transition"]["released_from"], doc["transition"]["rule"]) == ("maintenance", "window_end")
        assert [g.body.decode() for g in rx.at("/tpl")] == ["down|down|window_end"]


async def test_flapping_broken_and_ingest_anomaly_reach_only_the_channels_that_chose_them(tmp_path):
    async with rig(tmp_path) as r, http_receiver() as rx:
        default = await r.channel(kind="webhook", url=rx.url + "/default")
        await r.channel(kind="webhook", url=rx.url + "/opted", events=["flapping", "broken", "ingest_anomaly"])
        await r.channel(kind="webhook", url=rx.url + "/text", events=["flapping", "broken", "ingest_anomaly"],
                        body="$EVENT|$STATUS|$CODE|$NAME|$REASON")
        check = await r.check(name="Nightly backup", slug="nightly", tags="prod")
        await r.start()
        now = utcnow()
        flapping = Flapping(event_id=stable_id(check.id, "flapping", "1"), check_id=check.id,
                            project_id=check.project_id, at=now, flips=7)
        broken = Broken(event_id=stable_id(check.id, "broken", "1"), check_id=check.id, project_id=check.project_id,
                        at=now, down_since=now - timedelta(days=3))
        anomaly = IngestAnomaly(event_id=str(uuid7()), project_id=check.project_id, start=now - timedelta(minutes=1),
                                end=now, volume=3, baseline=120.0, unknown=42)
        for e in (flapping, broken):
            await r.log.produce(TOPIC_TRANSITIONS, encode(e), key=check.id.encode())
        await r.log.produce(TOPIC_TRANSITIONS, encode(anomaly))
        await rx.wait_for(lambda: len(rx.at("/opted")) == 3 and len(rx.at("/text")) == 3)
        by_event = {json.loads(g.body)["event"]: g for g in rx.at("/opted")}
        assert {e: g.headers["Idempotency-Key"] for e, g in by_event.items()} == {
            "flapping": flapping.event_id, "broken": broken.event_id, "ingest_anomaly": anomaly.event_id}
        f = json.loads(by_event["flapping"].body)
        assert (f["type"], f["flapping"], f["check"]["name"], f["check"]["slug"], f["check"]["project"]["name"]) == (
            "check.flapping", {"flips": 7}, "Nightly backup", "nightly", "acme")
        b = json.loads(by_event["broken"].body)
        assert (b["type"], b["check"]["uuid"]) == ("check.broken", check.id)
        assert b["broken"]["down_since"] == (now - timedelta(days=3)).replace(microsecond=0).isoformat().replace(
            "+00:00", "Z")
        a = json.loads(by_event["ingest_anomaly"].body)
        assert (a["type"], a["project"], a["volume"], a["baseline"], a["unknown"]) == (
            "ingest_anomaly", {"id": check.project_id, "name": "acme"}, 3, 120.0, 42)
        texts = sorted(g.body.decode() for g in rx.at("/text"))
        assert texts[0] == f"broken|broken|{check.id}|Nightly backup|down since " + b["broken"]["down_since"]
        assert texts[1] == f"flapping|flapping|{check.id}|Nightly backup|7 up/down changes within a day"
        assert texts[2].startswith("ingest_anomaly|ingest_anomaly|||3 pings in the minute") and "42 missed" in texts[2]
        deliveries = await r.wait_deliveries(6)
        assert sorted((d.event, d.status, d.check_id) for d in deliveries) == sorted(
            [("flapping", "delivered", check.id), ("broken", "delivered", check.id),
             ("ingest_anomaly", "delivered", "")] * 2)
        assert rx.at("/default") == [] and all(d.channel_id != default.id for d in deliveries)

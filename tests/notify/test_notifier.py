"""The notifier over a real embedded log, delivering to real local receivers: an HTTP server, an
SMTP server (aiosmtpd), and Apprise's own json:// and form:// senders. Nothing of the sending
path is mocked."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import unquote_plus

import msgspec
import pytest
from standardwebhooks import Webhook

from notify.safety import PrivateTarget, PublicOnlyResolver
from runtime.registry import save_check
from tests.notify.receivers import http_receiver, smtp_receiver
from tests.notify.rig import rig


async def test_it_sends_a_signed_webhook_with_the_checks_context(tmp_path):
    async with rig(tmp_path) as r, http_receiver() as rx:
        hook = await r.channel(name="ops", kind="webhook", url=rx.url + "/hook")
        check = await r.check(name="Nightly backup", slug="nightly-backup", tags="prod db", desc="pg_dump",
                              kind="cron", schedule="0 2 * * *", tz="Europe/Riga")
        await r.start()
        ping = await r.ping(check, "fail", exit_status=3, body=b"disk full\n" + b"x" * 5000)
        t = await r.transition(check, "up", "down", "fail ping (exit status 3)", cause=ping)
        await rx.wait_for(lambda: rx.at("/hook"))
        (got,) = rx.at("/hook")
        assert got.method == "POST" and got.headers["Content-Type"] == "application/json"
        assert got.headers["User-Agent"].startswith("pingstream/")
        assert got.headers["Idempotency-Key"] == t.event_id == got.headers["webhook-id"]
        # Standard Webhooks: the receiver verifies with the secret it was shown once.
        Webhook(hook.secret).verify(got.body, got.headers)
        doc = json.loads(got.body)
        assert doc["type"] == "check.down" and doc["id"] == t.event_id and doc["status"] == "down"
        c = doc["check"]
        assert (c["name"], c["slug"], c["tags"], c["desc"]) == ("Nightly backup", "nightly-backup", ["prod", "db"],
                                                                "pg_dump")
        assert (c["schedule"], c["tz"], c["project"]["name"]) == ("0 2 * * *", "Europe/Riga", "acme")
        assert c["ping_url"] == f"https://ping.example.com/ping/{check.id}"
        assert c["last_ping"]["exit_status"] == 3 and c["last_ping"]["kind"] == "fail"
        assert c["last_ping"]["body"].startswith("disk full\n") and len(c["last_ping"]["body"]) == 1024
        assert doc["transition"]["reason"] == "fail ping (exit status 3)"
        (d,) = await r.wait_deliveries(1)
        assert (d.status, d.attempts, d.alert_id, d.channel_id, d.event) == ("delivered", 1, t.event_id, hook.id, "down")


async def test_it_fills_healthchecks_template_variables(tmp_path):
    async with rig(tmp_path) as r, http_receiver() as rx:
        await r.channel(kind="webhook", url=rx.url + "/t/$CODE/$STATUS?n=$NAME", method="PUT",
                        headers={"X-Check": "$NAME_JSON"},
                        body="$NAME|$SLUG|$STATUS|$TAGS|$TAG2|$EXITSTATUS|$BODY|$NOW|$EVENT")
        check = await r.check(name="a b", slug="ab", tags="t1 t2")
        await r.start()
        ping = await r.ping(check, "fail", exit_status=2, body=b"boom")
        t = await r.transition(check, "up", "down", "fail ping (exit status 2)", cause=ping)
        await rx.wait_for(lambda: rx.received)
        (got,) = rx.received
        assert got.method == "PUT" and got.path == f"/t/{check.id}/down"
        assert got.headers["X-Check"] == '"a b"'
        name, slug, status, tags, tag2, exit_status, body, now, event = got.body.decode().split("|")
        assert (name, slug, status, tags, tag2, exit_status, body, event) == ("a b", "ab", "down", "t1 t2", "t2", "2",
                                                                              "boom", "down")
        assert now == t.at.replace(microsecond=0).isoformat().replace("+00:00", "Z")


async def test_it_sends_only_the_events_a_channel_chose(tmp_path):
    async with rig(tmp_path) as r, http_receiver() as rx:
        await r.channel(kind="webhook", url=rx.url + "/default")
        await r.channel(kind="webhook", url=rx.url + "/all",
                        events=["down", "up", "started", "grace", "failure", "paused"])
        await r.channel(kind="webhook", url=rx.url + "/failures", events=["failure"])
        check = await r.check(name="job")
        await r.start()
        first = await r.ping(check, "success")
        await r.transition(check, "new", "up", "success ping", cause=first)  # new → up: nothing, as upstream
        start = await r.ping(check, "start")
        await r.transition(check, "up", "started", "start ping", cause=start)
        fail = await r.ping(check, "fail")
        down = await r.transition(check, "started", "down", "fail ping", cause=fail)
        ok = await r.ping(check, "success")
        up = await r.transition(check, "down", "up", "success ping", cause=ok)
        await r.transition(check, "up", "grace", "ping overdue, grace period started")
        await r.wait_deliveries(2 + 4 + 1)
        keys = lambda path: [json.loads(x.body)["event"] for x in rx.at(path)]  # noqa: E731
        assert sorted(keys("/default")) == ["down", "up"]
        assert sorted(keys("/all")) == ["down", "grace", "started", "up"]
        assert keys("/failures") == ["failure"]
        assert {x.headers["Idempotency-Key"] for x in rx.at("/default")} == {down.event_id, up.event_id}


async def test_an_alert_is_built_from_the_check_as_it_was_then(tmp_path):
    async with rig(tmp_path) as r, http_receiver() as rx:
        await r.channel(kind="webhook", url=rx.url + "/h", body="$NAME")
        check = await r.check(name="before")
        await r.start()
        await asyncio.sleep(0.05)  # the transition's record is stamped after the check's
        await r.transition(check, "up", "down")
        await save_check(r.log, r.registry, msgspec.structs.replace(check, name="after", channels=()))
        await rx.wait_for(lambda: rx.received)
        assert [x.body for x in rx.received] == [b"before"]


async def test_a_new_channel_starts_from_now_and_a_new_notifier_from_the_end(tmp_path):
    async with rig(tmp_path) as r, http_receiver() as rx:
        await r.channel(kind="webhook", url=rx.url + "/old")
        check = await r.check(name="job")
        history = await r.transition(check, "up", "down")  # before the notifier ever ran: never sent
        await r.start()
        await r.halt()
        while_stopped = await r.transition(check, "down", "up", "success ping")
        await asyncio.sleep(0.05)
        await r.channel(kind="webhook", url=rx.url + "/new")
        await r.start()  # resumes from its committed offsets: reads while_stopped
        after = await r.transition(check, "up", "down")
        await r.wait_deliveries(3)
        assert [x.headers["Idempotency-Key"] for x in rx.at("/old")] == [while_stopped.event_id, after.event_id]
        assert [x.headers["Idempotency-Key"] for x in rx.at("/new")] == [after.event_id]
        assert history.event_id not in {x.headers["Idempotency-Key"] for x in rx.received}


async def test_it_retries_with_backoff_then_marks_the_delivery_failed(tmp_path):
    async with rig(tmp_path, PINGSTREAM_NOTIFY_RETRY_S="1.5") as r, http_receiver() as rx:
        rx.status["/broken"] = 500
        await r.channel(kind="webhook", url=rx.url + "/broken")
        await r.channel(kind="webhook", url=rx.url + "/fine")
        check = await r.check(name="job")
        await r.start(first_backoff_s=0.1)
        t = await r.transition(check, "up", "down")
        found = await r.wait_deliveries(2)
        by_status = {d.status: d for d in found}
        assert by_status["delivered"].attempts == 1
        failed = by_status["failed"]
        assert failed.attempts >= 3 and failed.error == "HTTP 500" and failed.alert_id == t.event_id
        assert len(rx.at("/broken")) == failed.attempts
        assert {x.headers["Idempotency-Key"] for x in rx.at("/broken")} == {t.event_id}


async def test_an_ingest_gap_goes_to_the_channels_that_chose_it(tmp_path):
    async with rig(tmp_path) as r, http_receiver() as rx:
        await r.channel(kind="webhook", url=rx.url + "/gaps", events=["ingest_gap"])
        await r.channel(kind="webhook", url=rx.url + "/default")
        await r.start()
        gap = await r.gap()
        await rx.wait_for(lambda: rx.received)
        await asyncio.sleep(0.3)
        (got,) = rx.received
        assert got.path == "/gaps" and json.loads(got.body)["type"] == "ingest_gap"
        assert got.headers["Idempotency-Key"] == gap.event_id


async def test_it_sends_email_through_smtp(tmp_path):
    with smtp_receiver() as (port, messages):
        async with rig(tmp_path, PINGSTREAM_SMTP_HOST="127.0.0.1", PINGSTREAM_SMTP_PORT=str(port),
                       PINGSTREAM_SMTP_FROM="alerts@example.com") as r:
            await r.channel(kind="email", email="oncall@example.com")
            check = await r.check(name="Nightly backup", tags="prod")
            await r.start()
            ping = await r.ping(check, "fail", exit_status=1, body=b"tar: error")
            t = await r.transition(check, "up", "down", "fail ping (exit status 1)", cause=ping)
            (d,) = await r.wait_deliveries(1)
            assert d.status == "delivered"
            (m,) = messages
            assert m["To"] == "oncall@example.com" and m["From"] == "alerts@example.com"
            assert m["Subject"] == "DOWN | Nightly backup" and m["X-Pingstream-Alert-Id"] == t.event_id
            text = m.get_payload(decode=True).decode()
            assert "Exit status: 1" in text and "tar: error" in text and "Tags: prod" in text


@pytest.mark.parametrize("scheme", ["json", "form"])
async def test_it_sends_through_apprise(tmp_path, scheme):
    async with rig(tmp_path) as r, http_receiver() as rx:
        await r.channel(kind="apprise", url=f"{scheme}://{rx.url.removeprefix('http://')}/apprise")
        check = await r.check(name="Nightly backup")
        await r.start()
        await r.transition(check, "up", "down")
        (d,) = await r.wait_deliveries(1)
        assert d.status == "delivered"
        (got,) = rx.at("/apprise")
        text = got.body.decode() if scheme == "json" else unquote_plus(got.body.decode())
        assert "DOWN | Nightly backup" in text and "no ping within schedule + grace" in text


async def test_it_refuses_private_targets_unless_allowed(tmp_path):
    async with rig(tmp_path, PINGSTREAM_WEBHOOK_ALLOW_PRIVATE="0") as r, http_receiver() as rx:
        await r.channel(kind="webhook", url=rx.url + "/private")
        await r.channel(kind="apprise", url=f"json://{rx.url.removeprefix('http://')}/apprise")
        check = await r.check(name="job")
        await r.start()
        await r.transition(check, "up", "down")
        found = await r.wait_deliveries(2)
        assert {(d.status, d.attempts, d.error) for d in found} == {
            ("failed", 1, "target is a private address (PINGSTREAM_WEBHOOK_ALLOW_PRIVATE is off)")}
        assert rx.received == []


async def test_the_resolver_checks_the_resolved_address_not_the_name():
    resolver = PublicOnlyResolver()
    try:
        with pytest.raises(PrivateTarget):
            await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()


async def test_a_held_transition_is_recorded_and_not_sent(tmp_path):
    async with rig(tmp_path) as r, http_receiver() as rx:
        await r.channel(kind="webhook", url=rx.url + "/h")
        check = await r.check(name="job")
        await r.start()
        held = await r.transition(check, "up", "down", held="maintenance")
        sent = await r.transition(check, "down", "up", "success ping")
        found = await r.wait_deliveries(2)
        by_alert = {d.alert_id: d for d in found}
        assert (by_alert[held.event_id].status, by_alert[held.event_id].attempts,
                by_alert[held.event_id].error) == ("held", 0, "maintenance")
        assert by_alert[sent.event_id].status == "delivered"
        assert [x.headers["Idempotency-Key"] for x in rx.received] == [sent.event_id]


async def test_urls_and_secrets_never_reach_the_logs(tmp_path, caplog):
    caplog.set_level("INFO")
    async with rig(tmp_path, PINGSTREAM_NOTIFY_RETRY_S="1") as r, http_receiver() as rx:
        rx.status["/hook/tok-3f9a"] = 500
        hook = await r.channel(kind="webhook", url=rx.url + "/hook/tok-3f9a")
        await r.channel(kind="apprise", url="json://127.0.0.1:9/apprise/tok-77e1")  # nothing listens there
        check = await r.check(name="job")
        await r.start(first_backoff_s=0.1)
        await r.transition(check, "up", "down")
        found = await r.wait_deliveries(2)
        assert {d.status for d in found} == {"failed"}
        text = caplog.text + "".join(d.error for d in found)
        assert "failed after" in caplog.text  # the failures are logged, by channel id
        for secret in ("tok-3f9a", "tok-77e1", hook.secret, rx.url):
            assert secret not in text


async def test_a_restarted_notifier_still_knows_the_last_ping_before_the_restart(tmp_path):
    """The check pinged, the notifier restarted (its offsets committed past that ping), then the check
    went down: the alert still carries that ping ("Last ping", $BODY), as Healthchecks' would."""
    async with rig(tmp_path) as r, http_receiver() as rx:
        await r.channel(kind="webhook", url=rx.url + "/t", body="$STATUS|$EXITSTATUS|$BODY")
        await r.channel(kind="webhook", url=rx.url + "/json")
        check = await r.check(name="nightly")
        notifier = await r.start()
        ping = await r.ping(check, "fail", exit_status=4, body=b"out of memory")
        for _ in range(200):  # read (the graceful stop below commits its offset)
            if notifier.pings.seen(check.id, ping.event_id):
                break
            await asyncio.sleep(0.05)
        await r.halt()  # a graceful stop commits what was read
        await r.start()  # a new process: nothing in memory
        await r.transition(check, "up", "down")  # a missed deadline: no causing ping
        await rx.wait_for(lambda: rx.at("/t") and rx.at("/json"))
        (got,) = rx.at("/t")
        assert got.body.decode() == "down|4|out of memory"
        last = json.loads(rx.at("/json")[0].body)["check"]["last_ping"]
        assert (last["kind"], last["exit_status"], last["body"]) == ("fail", 4, "out of memory")

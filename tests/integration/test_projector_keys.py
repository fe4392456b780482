"""What a restarted projector remembers of the keyed pings (Idempotency-Key) it counted: read back from
``ping_keys`` (real chdb), only the window before each check's newest key and at most the bound per check,
however many rows the table keeps (a week)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from checks import idempotency
from checks.idempotency import ping_event_id
from projector.fold import CheckFold
from projector.service import Projector

A = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
B = "5bf66975-d4c7-4bf5-bcc8-b8d8a82ea278"
C = "7c1d2e3f-0000-4000-8000-00000000000c"
PROJECT = "019ab7ef-0000-7000-8000-000000000001"
T0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=4)  # the table keeps a week (TTL)


async def test_a_restart_reads_back_the_last_day_of_counted_keys_up_to_the_bound(clickhouse, monkeypatch):
    monkeypatch.setattr(idempotency, "MAX_KEYS_PER_CHECK", 60)
    rows = []
    # A: a key every 30 minutes for three days (144 rows), the last two not yet counted (a batch to fold again).
    a_keys = [(ping_event_id(A, f"a{i}"), T0 + timedelta(minutes=30 * i), i + 1) for i in range(144)]
    rows += [(event_id, A, at, n) for event_id, at, n in a_keys]
    # B: 120 keys a minute apart, all counted: more than the bound.
    b_keys = [(ping_event_id(B, f"b{i}"), T0 + timedelta(minutes=i), i + 1) for i in range(120)]
    rows += [(event_id, B, at, n) for event_id, at, n in b_keys]
    await clickhouse.insert_values("ping_keys", ["event_id", "check_id", "received_at", "n"], rows)

    states = {
        A: CheckFold(check_id=A, project_id=PROJECT, n_pings=142),
        B: CheckFold(check_id=B, project_id=PROJECT, n_pings=120),
        C: CheckFold(check_id=C, project_id=PROJECT, n_pings=3),  # keys never used
    }
    await Projector(clickhouse, None)._load_keys(states)

    newest_a = a_keys[-1][1]
    horizon = newest_a - timedelta(seconds=idempotency.WINDOW_S + 3600)
    expected_a = [e for e, at, n in a_keys if at >= horizon and n <= 142]
    assert len(expected_a) == 49 and states[A].recent.ids() == expected_a  # 25 h of rows, less the two uncounted
    assert states[A].recent.repeat(a_keys[-3][0], (newest_a + timedelta(hours=1)).timestamp())
    assert not states[A].recent.repeat(a_keys[-1][0], newest_a.timestamp())  # not counted: folded again
    assert states[B].recent.ids() == [e for e, _, _ in b_keys[-60:]]  # the newest, up to the bound
    assert states[C].recent is None

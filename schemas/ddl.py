"""ClickHouse DDL and its idempotent migration step.

Every table is deduplicating (ReplacingMergeTree keyed so that the same event
always lands on the same sorting key), and every projector insert carries an
``insert_deduplication_token``: a batch retried after a crash neither doubles
rows nor feeds the rollup views twice. Read with ``FINAL`` where an exact
count matters.
"""

from __future__ import annotations

# Each statement is idempotent (IF NOT EXISTS); new statements are appended.
# ``{db}`` is replaced by the database name (an identifier checked at start-up).
_DEDUP = "SETTINGS non_replicated_deduplication_window = 10000"

# The SELECTs of the views that make the runs from the pings that end them and the rollups from the runs, with
# ``{source}`` for what they read (and ``{bucket}``, the rollup's bucket function): the views' own, and the
# projector's when it writes again what ClickHouse dropped of a replayed batch (projector/service.py).
# (The WHERE is in a subquery: the outer SELECT's aliases have the pings columns' names, and an alias wins.)
RUNS_OF_PINGS = """
    SELECT event_id, assumeNotNull(start_event_id) AS start_event_id, check_id, project_id, rid,
           subtractMicroseconds(received_at, toInt64(round(assumeNotNull(duration_s) * 1000000))) AS started_at,
           received_at AS finished_at, assumeNotNull(duration_s) AS duration_s, kind AS outcome, exit_status
    FROM (SELECT event_id, start_event_id, check_id, project_id, rid, received_at, duration_s, kind, exit_status
          FROM {source} WHERE start_event_id IS NOT NULL)
    """
ROLLUP_OF_RUNS = """
    SELECT check_id, project_id, {bucket}(finished_at) AS bucket,
           countState() AS runs,
           countIfState(outcome = 'fail') AS failures,
           quantilesTDigestState(0.5, 0.95, 0.99)(duration_s) AS duration
    FROM {source} GROUP BY check_id, project_id, bucket
    """
ROLLUPS = {"durations_hourly": "toStartOfHour", "durations_daily": "toStartOfDay"}  # each rollup's bucket function


def _rollup_view(table: str) -> str:
    return (f"\n    CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.{table}_mv TO {{db}}.{table} AS"
            + ROLLUP_OF_RUNS.replace("{bucket}", ROLLUPS[table]).replace("{source}", "{db}.runs"))


STATEMENTS: list[str] = [
    "CREATE DATABASE IF NOT EXISTS {db}",
    f"""
    CREATE TABLE IF NOT EXISTS {{db}}.pings (
        event_id UUID,
        check_id UUID,
        project_id UUID,
        n UInt64,
        kind LowCardinality(String),
        exit_status Nullable(UInt8),
        rid Nullable(UUID),
        received_at DateTime64(6, 'UTC'),
        method LowCardinality(String),
        scheme LowCardinality(String),
        remote_addr String,
        user_agent String,
        body String,
        body_size UInt64,
        source LowCardinality(String),
        duration_s Nullable(Float64)
    ) ENGINE = ReplacingMergeTree
    PARTITION BY toYYYYMM(received_at)
    ORDER BY (check_id, received_at, event_id)
    {_DEDUP}
    """,
    f"""
    CREATE TABLE IF NOT EXISTS {{db}}.runs (
        event_id UUID,
        start_event_id UUID,
        check_id UUID,
        project_id UUID,
        rid Nullable(UUID),
        started_at DateTime64(6, 'UTC'),
        finished_at DateTime64(6, 'UTC'),
        duration_s Float64,
        outcome LowCardinality(String),
        exit_status Nullable(UInt8)
    ) ENGINE = ReplacingMergeTree
    PARTITION BY toYYYYMM(finished_at)
    ORDER BY (check_id, finished_at, event_id)
    {_DEDUP}
    """,
    f"""
    CREATE TABLE IF NOT EXISTS {{db}}.check_state (
        check_id UUID,
        project_id UUID,
        status LowCardinality(String),
        last_ping Nullable(DateTime64(6, 'UTC')),
        last_start Nullable(DateTime64(6, 'UTC')),
        last_start_rid Nullable(UUID),
        last_duration_s Nullable(Float64),
        n_pings UInt64,
        started UInt8,
        updated_at DateTime64(6, 'UTC'),
        version UInt64
    ) ENGINE = ReplacingMergeTree(version)
    ORDER BY check_id
    {_DEDUP}
    """,
    f"""
    CREATE TABLE IF NOT EXISTS {{db}}.transitions (
        event_id UUID,
        check_id UUID,
        project_id UUID,
        from_status LowCardinality(String),
        to_status LowCardinality(String),
        at DateTime64(6, 'UTC'),
        reason String,
        cause_event_id String
    ) ENGINE = ReplacingMergeTree
    PARTITION BY toYYYYMM(at)
    ORDER BY (check_id, at, event_id)
    {_DEDUP}
    """,
    """
    CREATE TABLE IF NOT EXISTS {db}.durations_hourly (
        check_id UUID,
        project_id UUID,
        bucket DateTime('UTC'),
        runs AggregateFunction(count),
        failures AggregateFunction(countIf, UInt8),
        duration AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Float64)
    ) ENGINE = AggregatingMergeTree
    ORDER BY (project_id, check_id, bucket)
    """,
    _rollup_view("durations_hourly"),
    """
    CREATE TABLE IF NOT EXISTS {db}.durations_daily (
        check_id UUID,
        project_id UUID,
        bucket DateTime('UTC'),
        runs AggregateFunction(count),
        failures AggregateFunction(countIf, UInt8),
        duration AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Float64)
    ) ENGINE = AggregatingMergeTree
    ORDER BY (project_id, check_id, bucket)
    """,
    _rollup_view("durations_daily"),
    # When a row became visible: ping → queryable latency, measured per row (bench/e2e.py).
    "ALTER TABLE {db}.pings ADD COLUMN IF NOT EXISTS inserted_at DateTime64(6, 'UTC') DEFAULT now64(6)",
    # The projector's fold state: open starts (rid, time, event id) and the offsets already applied,
    # so a restart resumes from here instead of replaying history, and a replay changes nothing.
    "ALTER TABLE {db}.check_state ADD COLUMN IF NOT EXISTS open_starts String DEFAULT '[]'",
    "ALTER TABLE {db}.check_state ADD COLUMN IF NOT EXISTS pings_offset Int64 DEFAULT -1",
    "ALTER TABLE {db}.check_state ADD COLUMN IF NOT EXISTS transitions_offset Int64 DEFAULT -1",
    # Which records each projector batch held (per partition), written before its rows: a batch
    # replayed after a crash is cut at the same offsets, so its insert blocks and their
    # deduplication tokens are identical and the rollup views never count a run twice. On Kafka; the
    # embedded log keeps this journal in its own file (EventLog.write_journal).
    """
    CREATE TABLE IF NOT EXISTS {db}.projector_batches (
        consumer String,
        topic String,
        partition UInt32,
        first_offset Int64,
        last_offset Int64,
        token String,
        at DateTime64(6, 'UTC') DEFAULT now64(6)
    ) ENGINE = MergeTree
    ORDER BY (consumer, topic, partition, first_offset)
    TTL toDateTime(at) + INTERVAL 7 DAY
    """,
    # A runs block dropped as a duplicate must not reach the rollups either: the projector inserts with
    # deduplicate_blocks_in_dependent_materialized_views, which needs a window on the views' tables.
    "ALTER TABLE {db}.durations_hourly MODIFY SETTING non_replicated_deduplication_window = 10000",
    "ALTER TABLE {db}.durations_daily MODIFY SETTING non_replicated_deduplication_window = 10000",
    # Healthchecks' stored status (new, up, down, paused) around each transition: where they differ
    # the transition is a flip of the Management API's /flips/ (empty in rows of older producers).
    "ALTER TABLE {db}.transitions ADD COLUMN IF NOT EXISTS from_base LowCardinality(String) DEFAULT ''",
    "ALTER TABLE {db}.transitions ADD COLUMN IF NOT EXISTS to_base LowCardinality(String) DEFAULT ''",
    # pingstream's rules (issue #19): why the transition's notifications were held (maintenance, snooze,
    # dependency:<uuid>, flapping) and which rule made it (failure_threshold, max_runtime, ...); '' for
    # none (and in rows projected before these columns existed).
    "ALTER TABLE {db}.transitions ADD COLUMN IF NOT EXISTS held LowCardinality(String) DEFAULT ''",
    "ALTER TABLE {db}.transitions ADD COLUMN IF NOT EXISTS rule LowCardinality(String) DEFAULT ''",
    # check_state.status is Healthchecks' stored status; status_at is when a ping or pause/resume last set
    # it, so a missed-deadline transition read after a later ping does not mark the check down.
    "ALTER TABLE {db}.check_state ADD COLUMN IF NOT EXISTS status_at Nullable(DateTime64(6, 'UTC'))",
    # The registry's checks by name (projector/catalog.py): one row per registry record, the latest
    # (highest offset of the check's registry partition) wins; a deleted check keeps its last
    # configuration with ``deleted`` set, so joins from runs, pings, transitions still name it.
    f"""
    CREATE TABLE IF NOT EXISTS {{db}}.checks (
        id UUID,
        project_id UUID,
        name String,
        slug String,
        tags Array(String),
        description String,
        kind LowCardinality(String),
        schedule String,
        timeout_s UInt32,
        grace_s UInt32,
        tz LowCardinality(String),
        channels String,
        manual_resume Bool,
        monitor_type LowCardinality(String),
        created DateTime64(6, 'UTC'),
        deleted Nullable(DateTime64(6, 'UTC')),
        updated_at DateTime64(6, 'UTC'),
        version UInt64
    ) ENGINE = ReplacingMergeTree(version)
    ORDER BY id
    {_DEDUP}
    """,
    # The pings sent with an Idempotency-Key (derived event ids) and their n: a restarted projector
    # remembers from here the keys its checks' state has counted, so a retry hours later is still
    # skipped (projector/fold.py). The fold looks back 24 h; rows are kept a week, as the log's records.
    f"""
    CREATE TABLE IF NOT EXISTS {{db}}.ping_keys (
        event_id UUID,
        check_id UUID,
        received_at DateTime64(6, 'UTC'),
        n UInt64
    ) ENGINE = ReplacingMergeTree
    ORDER BY (check_id, event_id)
    TTL toDateTime(received_at) + INTERVAL 7 DAY
    {_DEDUP}
    """,
    # How each alert to each channel ended (the notifier's pingstream.deliveries): one row per alert and
    # channel, the latest outcome kept (a delivery done again after a restart replaces its row).
    f"""
    CREATE TABLE IF NOT EXISTS {{db}}.notifications (
        event_id UUID,
        alert_id String,
        check_id String,
        project_id String,
        channel_id String,
        channel_kind LowCardinality(String),
        event LowCardinality(String),
        status LowCardinality(String),
        attempts UInt32,
        error String,
        at DateTime64(6, 'UTC'),
        finished DateTime64(6, 'UTC')
    ) ENGINE = ReplacingMergeTree(finished)
    PARTITION BY toYYYYMM(at)
    ORDER BY (check_id, at, alert_id, channel_id)
    {_DEDUP}
    """,
    # A batch whose pings end runs (issue #17) goes into ``pings_ending_runs`` instead of ``pings``: a Null table
    # (it keeps nothing) whose two views write the pings rows into ``pings`` and, from those that name the start
    # they end, the runs rows into ``runs`` (whose rollup views follow). The records are sent once and parsed once
    # (a second insert of the runs re-parsed their records). A batch that ends no run goes into ``pings`` itself:
    # a view on ``pings`` would cost every small batch of ``up`` its pipeline (bench/results/projector.md).
    # ``pings_ending_runs`` has the columns of ``pings``: a column added to ``pings`` is added to it too.
    "ALTER TABLE {db}.pings ADD COLUMN IF NOT EXISTS start_event_id Nullable(UUID)",
    "CREATE TABLE IF NOT EXISTS {db}.pings_ending_runs AS {db}.pings ENGINE = Null",
    """
    CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.pings_ending_runs_pings TO {db}.pings AS
    SELECT * FROM {db}.pings_ending_runs
    """,
    "\n    CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.pings_ending_runs_runs TO {db}.runs AS"
    + RUNS_OF_PINGS.replace("{source}", "{db}.pings_ending_runs"),
]


# The tables the projector writes once a batch: a new part each, several a second under load. ClickHouse's
# merge selector (base 5) rewrote each row four to eight times in merges of those small parts; with base 10 a
# merge waits for more parts of a size and takes them at once (bench/results/projector.md, 2026-12-02: rows
# merged less than half, the projector's CPU per batch of 3,500 pings a fifth less). Applied where the server
# knows the setting.
BATCH_TABLES = ("pings", "runs", "transitions", "ping_keys", "check_state", "projector_batches",
                "durations_hourly", "durations_daily")
MERGE_SETTINGS = {"merge_selector_base": 10}


def migrate(client, database: str) -> None:
    """Apply every statement; safe to run on every start, from any service."""
    for statement in STATEMENTS:
        client.command(statement.format(db=database))
    known = {row[0] for row in client.query(
        "SELECT name FROM system.merge_tree_settings WHERE name IN {names:Array(String)}",
        parameters={"names": list(MERGE_SETTINGS)}).result_rows}
    wanted = [f"{name} = {value}" for name, value in MERGE_SETTINGS.items() if name in known]
    if not wanted:
        return
    # Only where a table does not have them yet: an ALTER rewrites the table's metadata, at every service's start.
    has = {name: set(engine.partition(" SETTINGS ")[2].split(", ")) for name, engine in client.query(
        "SELECT name, engine_full FROM system.tables WHERE database = {db:String} AND name IN {names:Array(String)}",
        parameters={"db": database, "names": list(BATCH_TABLES)}).result_rows}
    for table in BATCH_TABLES:
        missing = [setting for setting in wanted if setting not in has.get(table, ())]
        if missing:
            client.command(f"ALTER TABLE {database}.{table} MODIFY SETTING {', '.join(missing)}")

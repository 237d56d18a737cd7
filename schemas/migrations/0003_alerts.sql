-- Alert state and history (consumers/alerts).
--
-- alert_state holds one row per (rule, group) and version: the latest version is the alert's
-- state (read with FINAL or argMax). Rows are written only when an alert changes state or is
-- delivered, so a restart loads pending alerts with their since-time and firing alerts with
-- what each notifier was already told (sent: notifier -> last delivery), and re-sends
-- nothing that was delivered. group_key is the group's labels as canonical JSON.
-- alert_history appends every transition with its evidence (JSON: top call-ids, peers,
-- user agents, anomalies).

CREATE TABLE IF NOT EXISTS alert_state
(
    rule LowCardinality(String),
    group_key String,
    labels Map(String, String),
    state LowCardinality(String),
    since DateTime64(3, 'UTC'),
    last_true DateTime64(3, 'UTC'),
    fired_at Nullable(DateTime64(3, 'UTC')),
    resolved_at Nullable(DateTime64(3, 'UTC')),
    value Float64,
    baseline Nullable(Float64),
    threshold Float64,
    sent Map(LowCardinality(String), DateTime64(3, 'UTC')),
    updated_at DateTime64(3, 'UTC'),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (rule, group_key)
TTL toDateTime(updated_at) + INTERVAL {ttl_alerts_days} DAY;

CREATE TABLE IF NOT EXISTS alert_history
(
    time DateTime64(3, 'UTC'),
    rule LowCardinality(String),
    group_key String,
    labels Map(String, String),
    from_state LowCardinality(String),
    to_state LowCardinality(String),
    value Float64,
    baseline Nullable(Float64),
    threshold Float64,
    severity LowCardinality(String),
    summary String,
    evidence String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (rule, time, group_key)
TTL toDateTime(time) + INTERVAL {ttl_alerts_days} DAY;

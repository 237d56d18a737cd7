-- hepwatch core tables: one per record kind of consumers/records.py.
--
-- Every table is a ReplacingMergeTree whose sort key ends with the record's deterministic id,
-- so a row written twice (a redelivery the sink could not rule out) collapses at merge time.
-- The sink also checks ids before inserting after a restore, so counts are exact before any
-- merge and the materialized views downstream never see a row twice. Each INSERT of the
-- sink carries an insert_deduplication_token; non_replicated_deduplication_window keeps the
-- last tokens, so a retried INSERT whose first attempt was stored is dropped, here and in
-- the views (Replicated tables of the cluster variant keep their own window).
--
-- Sort keys answer the two questions asked most: a time range filtered by method, status and
-- node (primary key prefix, day partitions prune the range), and everything about one Call-ID
-- (bloom-filter skip index on call_id). Times are DateTime64(6, 'UTC'): HEP capture time.
-- {ttl_*} placeholders are filled from the [clickhouse] config section by the runner.

CREATE TABLE IF NOT EXISTS sip_messages
(
    id String,
    event_time DateTime64(6, 'UTC'),
    node_name LowCardinality(String),
    capture_id UInt32,
    call_id String,
    is_request Bool,
    method LowCardinality(String),
    status UInt16,
    reason_phrase String,
    cseq UInt32,
    from_tag String,
    to_tag String,
    direction LowCardinality(String),
    dialog_state LowCardinality(String),
    origin LowCardinality(String),
    retransmission Bool,
    transport LowCardinality(String),
    src_ip IPv6,
    src_port UInt16,
    dst_ip IPv6,
    dst_port UInt16,
    user_agent LowCardinality(String),
    has_allow Bool,
    allow Array(LowCardinality(String)),
    has_supported Bool,
    supported Array(LowCardinality(String)),
    require Array(LowCardinality(String)),
    session_expires Nullable(UInt32),
    refresher LowCardinality(String),
    min_se Nullable(UInt32),
    has_sdp Bool,
    sdp_role LowCardinality(String),
    malformed Array(String),
    correlation_id String,
    x_cid String,
    obs_time Array(DateTime64(6, 'UTC')),
    obs_src_ip Array(IPv6),
    obs_src_port Array(UInt16),
    obs_dst_ip Array(IPv6),
    obs_dst_port Array(UInt16),
    obs_hop Array(LowCardinality(String)),
    obs_ref Array(String),
    obs_copies Array(UInt16),
    raw String CODEC(ZSTD(3)),
    src_partition Int32,
    src_offset Int64,
    INDEX idx_call_id call_id TYPE bloom_filter(0.001) GRANULARITY 1
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(event_time)
ORDER BY (method, status, node_name, event_time, id)
TTL toDateTime(event_time) + INTERVAL {ttl_messages_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS session_changes
(
    id String,
    event_time DateTime64(6, 'UTC'),
    node_name LowCardinality(String),
    call_id String,
    caller_tag String,
    callee_tag String,
    method LowCardinality(String),
    cseq UInt32,
    direction LowCardinality(String),
    dialog_state LowCardinality(String),
    status UInt16,
    status_class LowCardinality(String),
    time_to_final_ms Nullable(Float64),
    intent LowCardinality(String),
    offer_in LowCardinality(String),
    sdp_version_before Nullable(UInt64),
    sdp_version_after Nullable(UInt64),
    had_reliable_1xx Bool,
    retransmissions UInt32,
    ua_sender LowCardinality(String),
    ua_peer LowCardinality(String),
    evidence Array(String),
    fields Map(LowCardinality(String), String),
    src_partition Int32,
    src_offset Int64,
    INDEX idx_call_id call_id TYPE bloom_filter(0.001) GRANULARITY 1
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(event_time)
ORDER BY (method, status_class, node_name, event_time, id)
TTL toDateTime(event_time) + INTERVAL {ttl_session_changes_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS dialogs
(
    id String,
    node_name LowCardinality(String),
    call_id String,
    caller_tag String,
    callee_tag String,
    state LowCardinality(String),
    start_time DateTime64(6, 'UTC'),
    early_time Nullable(DateTime64(6, 'UTC')),
    confirmed_time Nullable(DateTime64(6, 'UTC')),
    end_time DateTime64(6, 'UTC'),
    end_reason LowCardinality(String),
    initial_status UInt16,
    call_id_owner LowCardinality(String),
    record_routed Nullable(Bool),
    caller_ua LowCardinality(String),
    callee_ua LowCardinality(String),
    caller_ip IPv6,
    callee_ip IPv6,
    reinvites UInt32,
    updates UInt32,
    pracks UInt32,
    anomalies UInt32,
    x_cid String,
    session_id_pair String,
    icid String,
    correlation_id String,
    src_partition Int32,
    src_offset Int64,
    INDEX idx_call_id call_id TYPE bloom_filter(0.001) GRANULARITY 1
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(start_time)
ORDER BY (node_name, start_time, id)
TTL toDateTime(end_time) + INTERVAL {ttl_dialogs_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS anomalies
(
    id String,
    event_time DateTime64(6, 'UTC'),
    detected_at DateTime64(6, 'UTC'),
    anomaly LowCardinality(String),
    severity Enum8('info' = 1, 'low' = 2, 'medium' = 3, 'high' = 4, 'critical' = 5),
    confidence Float32,
    capture_id UInt32,
    node_name LowCardinality(String),
    call_id String,
    caller_tag String,
    callee_tag String,
    dialog_state LowCardinality(String),
    direction LowCardinality(String),
    method LowCardinality(String),
    cseq UInt32,
    status UInt16,
    reason String,
    src_ip IPv6,
    src_port UInt16,
    dst_ip IPv6,
    dst_port UInt16,
    transport LowCardinality(String),
    ua_sender LowCardinality(String),
    ua_peer LowCardinality(String),
    hep_correlation_id String,
    x_cid String,
    session_id_pair String,
    icid String,
    call_id_owner LowCardinality(String),
    family LowCardinality(String),
    evidence Array(String),
    fields Map(LowCardinality(String), String),
    src_partition Int32,
    src_offset Int64,
    INDEX idx_call_id call_id TYPE bloom_filter(0.001) GRANULARITY 1
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(event_time)
ORDER BY (anomaly, node_name, event_time, id)
TTL toDateTime(event_time) + INTERVAL {ttl_anomalies_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;

-- Per-minute message counts by method, status, node, peer and user agent, kept by a
-- materialized view so the 491/405 dashboards and alerts read minutes, not messages.
-- peer is the sender of the message (for a 491 or a 405: the side that refused).
-- Rows are summed at merge time: always read them with sum(messages) ... GROUP BY.

CREATE TABLE IF NOT EXISTS sip_minute_counts
(
    minute DateTime('UTC'),
    status UInt16,
    method LowCardinality(String),
    node_name LowCardinality(String),
    peer IPv6,
    user_agent LowCardinality(String),
    messages UInt64,
    retransmissions UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (status, method, minute, node_name, peer, user_agent)
TTL minute + INTERVAL {ttl_minute_counts_days} DAY
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS sip_minute_counts_mv TO sip_minute_counts AS
SELECT
    toStartOfMinute(event_time) AS minute,
    status,
    method,
    node_name,
    src_ip AS peer,
    user_agent,
    count() AS messages,
    countIf(retransmission) AS retransmissions
FROM sip_messages
GROUP BY minute, status, method, node_name, peer, user_agent;

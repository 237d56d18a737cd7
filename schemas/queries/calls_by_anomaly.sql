-- name: calls_by_anomaly
-- description: The latest calls with one anomaly type, to open with `hepwatch flow CALL-ID`.
-- param: anomaly String -- the anomaly type, e.g. glare_491 (see anomalies_by_type)
-- param: window_hours UInt32 = 24 -- hours back from now
-- param: limit UInt32 = 50 -- rows shown
SELECT
    event_time,
    call_id,
    node_name,
    severity,
    method,
    cseq,
    status,
    ua_sender AS user_agent,
    ua_peer AS peer_user_agent,
    src_ip,
    dst_ip
FROM anomalies
WHERE anomaly = {anomaly:String}
    AND event_time >= now() - toIntervalHour({window_hours:UInt32})
ORDER BY event_time DESC, call_id
LIMIT {limit:UInt32}

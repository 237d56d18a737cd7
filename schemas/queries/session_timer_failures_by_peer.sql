-- name: session_timer_failures_by_peer
-- description: Session-timer problems (PROTOCOL.md C.8: refresh_missed, session_expired_bye,
-- description: refresh_late, refresher_table_violation, se_header_violation, ...; and C.5's
-- description: no_fallback_refresh after a refused UPDATE refresh) per node, peer (sender of
-- description: the triggering message; NULL when none), offending user agent and anomaly.
-- param: window_hours UInt32 = 24 -- hours back from now
-- param: min_severity String = 'low' -- info, low, medium, high or critical
SELECT
    node_name,
    nullIf(src_ip, toIPv6('::')) AS peer,
    ua_sender AS user_agent,
    anomaly,
    max(severity) AS worst_severity,
    count() AS anomalies,
    uniqExact(call_id) AS calls,
    max(event_time) AS last_seen,
    arraySlice(arraySort(groupUniqArray(call_id)), 1, 5) AS sample_call_ids
FROM anomalies
WHERE (family = 'C.8' OR anomaly = 'no_fallback_refresh')
    AND event_time >= now() - toIntervalHour({window_hours:UInt32})
    AND toInt8(severity) >= toInt8(CAST({min_severity:String}
        AS Enum8('info' = 1, 'low' = 2, 'medium' = 3, 'high' = 4, 'critical' = 5)))
GROUP BY node_name, peer, user_agent, anomaly
ORDER BY anomalies DESC, worst_severity DESC, node_name, user_agent, anomaly

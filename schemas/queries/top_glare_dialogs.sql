-- name: top_glare_dialogs
-- description: Dialogs with the most glare (PROTOCOL.md C.1): re-INVITE/UPDATE transactions
-- description: answered 491 (session_changes) and C.1 anomalies (glare_491, glare_repeat,
-- description: glare_retry_too_early, glare_no_retry, spurious_491, ...), worst first.
-- param: window_hours UInt32 = 24 -- hours back from now
-- param: limit UInt32 = 20 -- dialogs shown
SELECT
    call_id,
    node_name,
    caller_tag,
    callee_tag,
    sum(responses) AS responses_491,
    sum(found) AS glare_anomalies,
    arraySort(groupUniqArrayArray(kinds)) AS anomaly_types,
    transform(max(sev), [1, 2, 3, 4, 5], ['info', 'low', 'medium', 'high', 'critical'], '')
        AS worst_severity,
    min(first_time) AS first_seen,
    max(last_time) AS last_seen,
    arraySort(groupUniqArrayArray(uas)) AS user_agents
FROM
(
    SELECT
        call_id, node_name, caller_tag, callee_tag,
        count() AS responses,
        toUInt64(0) AS found,
        CAST([], 'Array(String)') AS kinds,
        toInt8(0) AS sev,
        min(event_time) AS first_time,
        max(event_time) AS last_time,
        groupUniqArrayArray(arrayFilter(u -> u != '', [toString(ua_sender), toString(ua_peer)]))
            AS uas
    FROM session_changes
    WHERE status = 491 AND event_time >= now() - toIntervalHour({window_hours:UInt32})
    GROUP BY call_id, node_name, caller_tag, callee_tag
    UNION ALL
    SELECT
        call_id, node_name, caller_tag, callee_tag,
        toUInt64(0) AS responses,
        count() AS found,
        groupUniqArray(toString(anomaly)) AS kinds,
        max(toInt8(severity)) AS sev,
        min(event_time) AS first_time,
        max(event_time) AS last_time,
        groupUniqArrayArray(arrayFilter(u -> u != '', [toString(ua_sender), toString(ua_peer)]))
            AS uas
    FROM anomalies
    WHERE family = 'C.1' AND event_time >= now() - toIntervalHour({window_hours:UInt32})
    GROUP BY call_id, node_name, caller_tag, callee_tag
)
GROUP BY call_id, node_name, caller_tag, callee_tag
ORDER BY responses_491 DESC, glare_anomalies DESC, last_seen DESC, call_id
LIMIT {limit:UInt32}

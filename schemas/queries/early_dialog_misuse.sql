-- name: early_dialog_misuse
-- description: Early-dialog misuse: re-INVITE sent in an early dialog (C.3
-- description: reinvite_in_early_dialog) and UPDATE in an early dialog answered 481 (C.6
-- description: early_update_481), per node, offending and peer user agent, with the answers seen.
-- param: window_hours UInt32 = 24 -- hours back from now
SELECT
    anomaly,
    node_name,
    ua_sender AS user_agent,
    ua_peer AS peer_user_agent,
    count() AS anomalies,
    uniqExact(call_id) AS calls,
    arraySort(arrayFilter(s -> match(s, '^[0-9]+$'), groupUniqArray(
        if(anomaly = 'reinvite_in_early_dialog', fields['response_status'], toString(status))
    ))) AS responses,
    max(severity) AS worst_severity,
    max(event_time) AS last_seen,
    arraySlice(arraySort(groupUniqArray(call_id)), 1, 5) AS sample_call_ids
FROM anomalies
WHERE anomaly IN ('reinvite_in_early_dialog', 'early_update_481')
    AND event_time >= now() - toIntervalHour({window_hours:UInt32})
GROUP BY anomaly, node_name, user_agent, peer_user_agent
ORDER BY anomalies DESC, anomaly, node_name, user_agent

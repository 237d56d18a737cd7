-- name: anomalies_by_type
-- description: Anomalies per catalogue family and type over the last window: count, calls,
-- description: worst severity, nodes, first and last time.
-- param: window_hours UInt32 = 24 -- hours back from now
-- param: node String = '' -- only this node ('' = every node)
SELECT
    family,
    anomaly,
    max(severity) AS worst_severity,
    count() AS anomalies,
    uniqExact(call_id) AS calls,
    arraySort(groupUniqArray(toString(node_name))) AS nodes,
    min(event_time) AS first_seen,
    max(event_time) AS last_seen
FROM anomalies
WHERE event_time >= now() - toIntervalHour({window_hours:UInt32})
    AND ({node:String} = '' OR node_name = {node:String})
GROUP BY family, anomaly
ORDER BY anomalies DESC, family, anomaly

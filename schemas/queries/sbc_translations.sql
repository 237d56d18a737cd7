-- name: sbc_translations
-- description: What SBCs/B2BUAs do to UPDATE between legs (PROTOCOL.md C.12: update_to_reinvite,
-- description: reinvite_to_update, update_absorbed, update_stripped_from_allow,
-- description: timer_terminated_locally) per node, correlation method and leg methods, with
-- description: the translation delay and sample leg pairs (A-leg Call-ID > B-leg Call-ID).
-- param: window_hours UInt32 = 24 -- hours back from now
SELECT
    anomaly,
    node_name,
    fields['correlation_method'] AS correlation_method,
    fields['leg_a_method'] AS leg_a_method,
    fields['leg_b_method'] AS leg_b_method,
    count() AS anomalies,
    uniqExact(fields['leg_a_call_id'], fields['leg_b_call_id']) AS leg_pairs,
    round(avg(toFloat64OrNull(fields['translation_delay_ms'])), 3) AS avg_delay_ms,
    max(toFloat64OrNull(fields['translation_delay_ms'])) AS max_delay_ms,
    max(event_time) AS last_seen,
    arraySlice(arraySort(groupUniqArray(
        concat(fields['leg_a_call_id'], ' > ', fields['leg_b_call_id'])
    )), 1, 5) AS sample_legs
FROM anomalies
WHERE family = 'C.12' AND event_time >= now() - toIntervalHour({window_hours:UInt32})
GROUP BY anomaly, node_name, correlation_method, leg_a_method, leg_b_method
ORDER BY anomalies DESC, anomaly, node_name, correlation_method, leg_a_method, leg_b_method

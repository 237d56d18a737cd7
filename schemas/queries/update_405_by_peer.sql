-- name: update_405_by_peer
-- description: 405 and 501 answers to UPDATE per node and answering peer (sip_minute_counts),
-- description: with the C.5 verdicts on them: the sender ignored an Allow without UPDATE
-- description: (allow_said_no), the peer refused what it advertised (allow_said_yes), no Allow
-- description: seen before (no_allow_info), 405 without an Allow header (missing_allow).
-- param: window_hours UInt32 = 24 -- hours back from now
SELECT
    node_name,
    peer,
    sum(r405) AS responses_405,
    sum(r501) AS responses_501,
    sum(said_no) AS allow_said_no,
    sum(said_yes) AS allow_said_yes,
    sum(no_info) AS no_allow_info,
    sum(no_allow) AS missing_allow,
    arraySort(groupUniqArrayIf(user_agent, user_agent != '')) AS user_agents
FROM
(
    SELECT
        node_name, peer, toString(user_agent) AS user_agent,
        sumIf(toUInt64(messages - retransmissions), status = 405) AS r405,
        sumIf(toUInt64(messages - retransmissions), status = 501) AS r501,
        toUInt64(0) AS said_no, toUInt64(0) AS said_yes, toUInt64(0) AS no_info,
        toUInt64(0) AS no_allow
    FROM sip_minute_counts
    WHERE status IN (405, 501) AND method = 'UPDATE'
        AND minute >= toStartOfMinute(now() - toIntervalHour({window_hours:UInt32}))
    GROUP BY node_name, peer, user_agent
    UNION ALL
    SELECT
        node_name, src_ip AS peer, '' AS user_agent,
        toUInt64(0) AS r405, toUInt64(0) AS r501,
        countIf(anomaly = '405_update_allow_said_no') AS said_no,
        countIf(anomaly = '405_update_allow_said_yes') AS said_yes,
        countIf(anomaly = '405_update_no_info') AS no_info,
        countIf(anomaly = '405_missing_allow') AS no_allow
    FROM anomalies
    WHERE family = 'C.5' AND method = 'UPDATE' AND status IN (405, 501)
        AND event_time >= now() - toIntervalHour({window_hours:UInt32})
    GROUP BY node_name, peer
)
GROUP BY node_name, peer
ORDER BY responses_405 + responses_501 DESC, node_name, peer

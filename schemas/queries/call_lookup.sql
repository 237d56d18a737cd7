-- name: call_lookup
-- description: One Call-ID at a glance: its messages in order, user agents, X-CID, dialog
-- description: states and anomalies (`hepwatch flow CALL-ID` draws the ladder).
-- param: call_id String -- the SIP Call-ID
SELECT
    m.call_id AS call_id,
    m.node_name AS node_name,
    m.first_seen AS first_seen,
    m.last_seen AS last_seen,
    m.messages AS messages,
    m.sequence AS sequence,
    m.user_agents AS user_agents,
    m.x_cids AS x_cids,
    d.states AS dialog_states,
    a.found AS anomalies
FROM
(
    SELECT
        call_id,
        node_name,
        min(event_time) AS first_seen,
        max(event_time) AS last_seen,
        count() AS messages,
        arrayStringConcat(arrayMap(x -> x.3, arraySort(x -> (x.1, x.2),
            groupArray((event_time, cseq, if(is_request, method, toString(status))))
        )), ' ') AS sequence,
        arraySort(groupUniqArrayIf(toString(user_agent), user_agent != '')) AS user_agents,
        arraySort(groupUniqArrayIf(x_cid, x_cid != '')) AS x_cids
    FROM sip_messages
    WHERE call_id = {call_id:String}
    GROUP BY call_id, node_name
) AS m
LEFT JOIN
(
    SELECT node_name, arraySort(groupArray(concat(callee_tag, ':', toString(state), ':',
        toString(end_reason)))) AS states
    FROM dialogs
    WHERE call_id = {call_id:String}
    GROUP BY node_name
) AS d ON d.node_name = m.node_name
LEFT JOIN
(
    SELECT node_name, arraySort(groupArray(toString(anomaly))) AS found
    FROM anomalies
    WHERE call_id = {call_id:String}
    GROUP BY node_name
) AS a ON a.node_name = m.node_name
ORDER BY node_name

-- name: update_support_by_user_agent
-- description: Per user agent and peer address: whether the Allow headers it sent list UPDATE
-- description: (yes, no, mixed, unknown), the UPDATEs it sent, and the 405/501 it answered to
-- description: UPDATE (PROTOCOL.md C.4, C.5). Reads sip_messages; retransmissions not counted.
-- param: window_hours UInt32 = 24 -- hours back from now
SELECT
    user_agent,
    src_ip AS peer,
    countIf(has_allow) AS messages_with_allow,
    countIf(has_allow AND has(allow, 'UPDATE')) AS allow_with_update,
    countIf(has_allow AND NOT has(allow, 'UPDATE')) AS allow_without_update,
    multiIf(
        allow_with_update > 0 AND allow_without_update = 0, 'yes',
        allow_without_update > 0 AND allow_with_update = 0, 'no',
        allow_with_update > 0, 'mixed',
        'unknown'
    ) AS allows_update,
    countIf(is_request AND method = 'UPDATE') AS updates_sent,
    countIf(NOT is_request AND method = 'UPDATE' AND status = 405) AS responses_405_to_update,
    countIf(NOT is_request AND method = 'UPDATE' AND status = 501) AS responses_501_to_update
FROM sip_messages
WHERE event_time >= now() - toIntervalHour({window_hours:UInt32})
    AND NOT retransmission
    AND (has_allow OR method = 'UPDATE')
GROUP BY user_agent, peer
ORDER BY responses_405_to_update DESC, allow_without_update DESC, user_agent, peer

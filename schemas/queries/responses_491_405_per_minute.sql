-- name: responses_491_405_per_minute
-- description: 491 Request Pending (glare) and 405 Method Not Allowed responses per minute and
-- description: node over the last window, read from the per-minute counts (sip_minute_counts),
-- description: retransmissions not counted; responses_405_to_update is the part answering UPDATE.
-- param: window_minutes UInt32 = 60 -- minutes back from now
-- param: node String = '' -- only this node ('' = every node)
SELECT
    minute,
    node_name,
    sumIf(toUInt64(messages - retransmissions), status = 491) AS responses_491,
    sumIf(toUInt64(messages - retransmissions), status = 405) AS responses_405,
    sumIf(toUInt64(messages - retransmissions), status = 405 AND method = 'UPDATE')
        AS responses_405_to_update
FROM sip_minute_counts
WHERE status IN (491, 405)
    AND minute >= toStartOfMinute(now() - toIntervalMinute({window_minutes:UInt32}))
    AND ({node:String} = '' OR node_name = {node:String})
GROUP BY minute, node_name
ORDER BY minute, node_name

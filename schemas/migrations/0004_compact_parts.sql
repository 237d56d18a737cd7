-- Inserted blocks become compact parts (one file for all columns) below 256 MiB instead of
-- wide parts (two files per column: about 120 for sip_messages). Creating those files was a
-- third of the embedded engine's insert time; merges still produce wide parts for big data.

ALTER TABLE sip_messages MODIFY SETTING min_bytes_for_wide_part = 268435456;
ALTER TABLE session_changes MODIFY SETTING min_bytes_for_wide_part = 268435456;
ALTER TABLE dialogs MODIFY SETTING min_bytes_for_wide_part = 268435456;
ALTER TABLE anomalies MODIFY SETTING min_bytes_for_wide_part = 268435456;
ALTER TABLE sip_minute_counts MODIFY SETTING min_bytes_for_wide_part = 268435456;

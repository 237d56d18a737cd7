"""Alerting on SIP counts: YAML rules (rules), pure evaluation (evaluate), the ClickHouse
adapter for counts, evidence and state (store), notifiers (notify) and the periodic loop
(service)."""

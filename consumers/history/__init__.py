"""Reading the history back out of ClickHouse: SQL with bound parameters, the saved-query
catalogue of `schemas/queries/`, and the ladder of one call with its legs.

This package is a thin adapter over clickhouse-connect (chDB or a server); the commands in
`hepwatch/cmd_sql.py` and `hepwatch/cmd_flow.py` are its only callers.
"""

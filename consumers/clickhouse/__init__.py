"""ClickHouse adapter: connection from a DSN, schema migrations, the cluster variant, the sink.

- `client.connect(dsn)`: a clickhouse-connect client for `chdb:///path` or `http(s)://...`.
- `migrations.apply_migrations(client, settings.clickhouse)`: the ordered schema files.
- `cluster.cluster_statements(...)`: the same DDL for a cluster (Replicated + Distributed).
- `sink.ClickHouseSink(client, settings.clickhouse)`: records into the tables.

This is the I/O edge; the protocol core never imports it.
"""

from consumers.clickhouse.client import ClickHouseDsnError, connect
from consumers.clickhouse.migrations import MigrationError, apply_migrations, migrate
from consumers.clickhouse.sink import ClickHouseSink, SinkFlushError

__all__ = [
    "ClickHouseDsnError",
    "ClickHouseSink",
    "MigrationError",
    "SinkFlushError",
    "apply_migrations",
    "connect",
    "migrate",
]

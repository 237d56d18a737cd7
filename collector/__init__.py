"""The ingest edge of hepwatch: HEP codec, listeners, Kafka publisher and disk spool."""

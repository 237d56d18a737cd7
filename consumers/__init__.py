"""Stream processing: SIP parsing, transactions, dialogs, detectors and sinks."""

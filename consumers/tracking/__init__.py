"""Call, dialog and transaction tracking for a passive observer (RFC 3261 §12-§17)."""

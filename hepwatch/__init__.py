"""Command line, configuration and the wiring of the services; no protocol logic."""

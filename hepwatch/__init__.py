"""Command line, configuration and the wiring of the services; no protocol logic."""

__version__ = "0.1.0"

"""Network listeners: thin adapters from sockets to the shared accept path."""

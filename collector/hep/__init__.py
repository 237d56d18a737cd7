"""HEP v1/v2/v3 codec: the construct declaration, the fast decoder and the HEPv3 encoder."""

"""BLAKE2b, the one hash of the core: record ids, dedup keys, SDP and reason digests.

Taken from CPython's own `_blake2` module (what `hashlib.blake2b` is) rather than through
`hashlib`, whose import also loads the OpenSSL bindings (`_hashlib`, ~3 ms: about 1% of a
short `hepwatch analyze`) for algorithms the core never uses.
"""

from __future__ import annotations

try:
    from _blake2 import blake2b
except ImportError:  # an interpreter built without it: hashlib falls back to OpenSSL's
    from hashlib import blake2b

__all__ = ["blake2b"]

"""Who may send HEP: per-agent keys (chunk 0x000e) and source network allowlists.

PROTOCOL.md A.10: the key is a plain-text shared secret, so it is compared in constant
time, never logged and never forwarded (the accept path strips it before Kafka). Keys are
configured per capture id, with "*" for any capture id; once any key is configured, a
packet whose capture id has no key of its own must carry the "*" key.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable, Mapping


class AuthPolicy:
    def __init__(self, keys: Mapping[str, str], allow_cidrs: Iterable[str] = ()) -> None:
        self._keys: dict[int, bytes] = {}
        self._default_key: bytes | None = None
        for capture_id, key in keys.items():
            if capture_id == "*":
                self._default_key = key.encode()
            else:
                self._keys[int(capture_id)] = key.encode()
        self._networks = [ipaddress.ip_network(c, strict=False) for c in allow_cidrs]
        self._source_cache: dict[str, bool] = {}
        self.requires_key = bool(self._keys) or self._default_key is not None
        self.restricts_sources = bool(self._networks)

    def source_allowed(self, host: str) -> bool:
        """Whether a sender address is inside the allowlist (always true without one)."""
        if not self._networks:
            return True
        cached = self._source_cache.get(host)
        if cached is not None:
            return cached
        try:
            addr = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            allowed = False
        else:
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
            allowed = any(addr in net for net in self._networks)
        if len(self._source_cache) > 65536:
            self._source_cache.clear()
        self._source_cache[host] = allowed
        return allowed

    def key_valid(self, capture_id: int, key: bytes | None) -> bool:
        """Whether a packet's auth key is the one configured for its capture id."""
        if not self.requires_key:
            return True
        expected = self._keys.get(capture_id, self._default_key)
        if expected is None or key is None:
            return False
        return hmac.compare_digest(expected, key)

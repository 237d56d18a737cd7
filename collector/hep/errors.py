"""Typed rejection reasons for HEP packets.

Every packet the collector refuses is refused for exactly one of these reasons, and the
reason is what the rejection counters and the rate-limited sample log are keyed by.
"""

from __future__ import annotations

import enum


class RejectReason(enum.StrEnum):
    BAD_MAGIC = "bad_magic"  # neither HEP3/EEP3 nor a v1/v2 version byte
    TRUNCATED = "truncated"  # fewer bytes than a header, a chunk or the declared length needs
    BAD_LENGTH = "bad_length"  # total length below 6 or otherwise impossible
    BAD_CHUNK = "bad_chunk"  # chunk length < 6, running past the packet, or wrong fixed size
    OVERSIZE = "oversize"  # larger than the configured maximum, or inflates past it
    AUTH = "auth"  # missing or wrong auth key, or sender outside the allowlist
    NOT_SIP = "not_sip"  # a SIP-typed packet whose payload is missing or not a SIP message
    BAD_COMPRESSION = "bad_compression"  # 0x0010 payload that does not inflate


class HepError(ValueError):
    """A packet that cannot be accepted, with the reason it was refused."""

    def __init__(self, reason: RejectReason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail

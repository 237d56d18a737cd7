"""HEP v1/v2/v3 codec: the construct declaration, the fast decoder and the HEPv3 encoder.

The hot-path API is re-exported here; the construct reference codec stays in
`collector.hep.declaration` so that importing the package does not load construct.
"""

from .errors import HepError, RejectReason
from .fast import decode, encode_v3, find_call_id, looks_like_sip, strip_auth_key
from .model import HepPacket

__all__ = [
    "HepError",
    "HepPacket",
    "RejectReason",
    "decode",
    "encode_v3",
    "find_call_id",
    "looks_like_sip",
    "strip_auth_key",
]

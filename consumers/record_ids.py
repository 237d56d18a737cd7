"""Record ids: the stable hash every output record is named by (see `consumers.records`).

In a module of its own so that the install compiles it with the hot path (setup.py); every
record the engine emits takes one.
"""

from __future__ import annotations

from consumers.hashing import blake2b


def record_id(*parts: object) -> str:
    """A stable 16-hex-digit id from the parts that identify a record: each part's text
    (UTF-8, lone surrogates kept) followed by 0x1F, hashed with BLAKE2b-64."""
    if len(parts) == 1 and type(parts[0]) is str:
        # A message record's id (its evidence id): the same bytes in one call.
        data = (parts[0] + "\x1f").encode("utf-8", "surrogatepass")
    else:
        # One text, one encode, one hash: the same bytes as part by part (0x1F is one
        # byte in UTF-8 and keeps surrogates of neighbouring parts apart).
        text = "\x1f".join(map(str, parts)) + "\x1f" if parts else ""
        data = text.encode("utf-8", "surrogatepass")
    return blake2b(data, digest_size=8).hexdigest()

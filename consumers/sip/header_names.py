"""Header-name normalisation: case folding and the compact forms.

Header names are case-insensitive [RFC 3261 §7.3.1] and compact forms MUST be accepted
[§7.3.3]. Every name is stored under its lower-cased full form, so `"v"`, `"Via"` and `"VIA "`
all land under `"via"`. The compact table is PROTOCOL.md B.1 (RFC 3261 §7.3.3 and §20,
RFC 3265/6665, 3515, 3892, 4028 §4, 3841, 4474).
"""

from __future__ import annotations

from typing import Final, TypeAlias

from consumers.sip.lazy_pattern import LazyPattern

# A message's headers: lower-cased full name -> its values, one per header line, in order.
# Tuples, not lists: a parsed message lives as long as its call, and tuples of str (and a
# dict holding only those) are not tracked by the cycle collector, which would otherwise
# rescan a container per header of every live message.
Headers: TypeAlias = dict[str, tuple[str, ...]]

COMPACT_FORMS: Final[dict[str, str]] = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "u": "allow-events",
    "r": "refer-to",
    "b": "referred-by",
    "x": "session-expires",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
    "y": "identity",
    "n": "identity-info",
}

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~") [§25.1]
_TOKEN: Final = LazyPattern(r"[A-Za-z0-9\-.!%*_+`'~]+")

# Names as they usually appear on the wire, mapped straight to their key, so the common case
# costs one dict lookup. Names seen at run time are added up to a bound, short names only
# (garbage input must not grow it without limit).
_KNOWN_FULL: Final = (  # noqa: SIM905 - a word list reads better than 80 quoted strings
    "Via Call-ID CSeq From To Contact Max-Forwards Content-Length Content-Type Route "
    "Record-Route Allow Supported Require Proxy-Require Unsupported Session-Expires Min-SE "
    "User-Agent Server Content-Disposition Content-Encoding Expires Retry-After RSeq RAck "
    "Reason Warning Accept Accept-Encoding Accept-Language Allow-Events Event Refer-To "
    "Referred-By Replaces Subject Date Timestamp Organization Priority Authorization "
    "Proxy-Authorization WWW-Authenticate Proxy-Authenticate Authentication-Info "
    "P-Asserted-Identity P-Preferred-Identity Privacy P-Charging-Vector Session-ID X-CID "
    "Diversion History-Info Remote-Party-ID Call-Info Alert-Info Error-Info In-Reply-To "
    "MIME-Version Reply-To Content-Language Subscription-State Path Service-Route "
    "P-Access-Network-Info P-Visited-Network-ID Identity Identity-Info Accept-Contact "
    "Reject-Contact Request-Disposition Min-Expires Security-Client Security-Server "
    "Security-Verify RSeq Refer-Sub Target-Dialog Join Geolocation Feature-Caps"
).split()

_NAME_CACHE: Final[dict[str, str]] = {}
_NAME_CACHE_LIMIT: Final = 4096


def _seed() -> None:
    for full in _KNOWN_FULL:
        for spelling in (full, full.lower(), full.upper()):
            _NAME_CACHE[spelling] = full.lower()
    for short, full in COMPACT_FORMS.items():
        _NAME_CACHE[short] = full
        _NAME_CACHE[short.upper()] = full
    # Spellings that common stacks emit with non-canonical case.
    for odd in ("Call-Id", "CSEQ", "Cseq", "Max-forwards", "Content-type", "Content-length"):
        _NAME_CACHE[odd] = odd.lower()


_seed()


def header_key(raw_name: str) -> str | None:
    """The dictionary key for a header name as it appeared before the colon.

    Surrounding whitespace is dropped, case folded, compact forms expanded. Returns None when
    the name is not a token (the line is then malformed).
    """
    key = _NAME_CACHE.get(raw_name)
    if key is not None:
        return key
    name = raw_name.strip(" \t")
    if not name or not name.isascii() or _TOKEN.fullmatch(name) is None:
        return None
    key = name.lower()
    key = COMPACT_FORMS.get(key, key)
    if (
        len(_NAME_CACHE) < _NAME_CACHE_LIMIT
        and len(raw_name) <= 64
        and raw_name[:1] not in (" ", "\t")
    ):
        _NAME_CACHE[raw_name] = key
    return key


def normalise_name(name: str) -> str:
    """Key for a name given by a caller of `SipMessage.header` (no validation)."""
    key = name.strip(" \t").lower()
    return COMPACT_FORMS.get(key, key)


def frozen_headers(lists: dict[str, list[str]]) -> Headers:
    """The headers built line by line (name -> list of values) in their stored form."""
    return {key: tuple(values) for key, values in lists.items()}

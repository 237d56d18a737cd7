"""RFC 3261 §25.1 ABNF as strict regular expressions, for validation only.

The extractors (`name_addr`, `via`, `uri`, `numeric_headers`...) are liberal and fast; these
patterns decide whether a value was well formed. They run when a consumer reads
`SipMessage.malformed` (or an `errors` property), never on the extraction path. Values reach
them unfolded (a fold is one SP) and trimmed.

Deliberate liberties: no LWS needed between a display name and '<' (RFC 4475 lwsdisp,
errata); '_' in host names and '#' in SIP user parts (both common from real devices);
quoted strings may hold any non-ASCII octet. Possessive quantifiers keep every pattern
linear on hostile input.
"""

from __future__ import annotations

import re
from typing import Final

from consumers.sip.lazy_pattern import LazyPattern

TOKEN: Final = r"[A-Za-z0-9\-.!%*_+`'~]+"
SWS: Final = r"[ \t]*"
LWS: Final = r"[ \t]+"
# qdtext: any octet but CTLs (other than HTAB), '"' and '\'; quoted-pair: '\' and 0x00-0x7F
# other than CR and LF.
QUOTED: Final = r'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*+"'
HOST: Final = r"(?:[A-Za-z0-9_\-.]+|\[[0-9A-Fa-f:.]+\])"
PORT: Final = r"(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
# gen-value = token / host / quoted-string; Via received= may be a bare IPv6 address [§20.42]
IPV6_ADDRESS: Final = r"[0-9A-Fa-f]*+:[0-9A-Fa-f:.]*+"
# A value must end where the parameter ends: the possessive repetition of PARAMS never
# comes back to try another branch, so the branch is chosen here.
GEN_VALUE: Final = f"(?:{IPV6_ADDRESS}|\\[[0-9A-Fa-f:.]++\\]|{TOKEN}+|{QUOTED})(?![^ \\t;])"
GENERIC_PARAM: Final = f"{TOKEN}(?:{SWS}={SWS}{GEN_VALUE})?"
PARAMS: Final = f"(?:{SWS};{SWS}{GENERIC_PARAM})*+"

TOKEN_RE: Final = LazyPattern(TOKEN)

# -- URIs [§19.1.1, §25.1; RFC 3966 loosely; absoluteURI of RFC 2396] ----------------------
_ESCAPED: Final = r"%[0-9A-Fa-f]{2}"
_UNRESERVED: Final = r"A-Za-z0-9\-_.!~*'()"
_USER: Final = f"(?:[{_UNRESERVED}&=+$,;?/#]|{_ESCAPED})++"
_PASSWORD: Final = f"(?:[{_UNRESERVED}&=+$,]|{_ESCAPED})*+"
_PARAMCHAR: Final = f"(?:[{_UNRESERVED}\\[\\]/:&+$]|{_ESCAPED})"
_HCHAR: Final = f"(?:[{_UNRESERVED}\\[\\]/?:+$]|{_ESCAPED})"
_URI_PARAMS: Final = f"(?:;{_PARAMCHAR}++(?:={_PARAMCHAR}++)?)*+"
_URI_HEADERS: Final = f"(?:\\?{_HCHAR}++={_HCHAR}*+(?:&{_HCHAR}++={_HCHAR}*+)*+)?"
SIP_URI: Final = LazyPattern(
    f"[sS][iI][pP][sS]?:(?:{_USER}(?::{_PASSWORD})?@)?{HOST}(?::{PORT})?{_URI_PARAMS}{_URI_HEADERS}"
)
TEL_URI: Final = LazyPattern(r'[tT][eE][lL]:[^;\s<>"]++(?:;[^;=\s<>"]++(?:=[^;\s<>"]++)?)*+')
ABSOLUTE_URI: Final = LazyPattern(r'[A-Za-z][A-Za-z0-9+\-.]*:[^\s<>"\\^`{|}\x00-\x1f\x7f]++')


def uri_ok(text: str) -> bool:
    scheme = text[:4].lower()
    if scheme == "sip:" or scheme == "sips":
        return SIP_URI.fullmatch(text) is not None
    if scheme == "tel:":
        return TEL_URI.fullmatch(text) is not None
    return ABSOLUTE_URI.fullmatch(text) is not None


# -- name-addr / addr-spec and header params [§20.10, §20.20, §20.39] -----------------------
# Group "b" (bracketed) or "a" (bare) is the URI. No whitespace just inside <>, and a bare
# URI holds no ';', '?' or ',' [§20].
DISPLAY_NAME: Final = f"(?:{TOKEN}(?:{LWS}{TOKEN})*+|{QUOTED})"
NAME_ADDR_VALUE: Final = LazyPattern(
    f'(?:(?:{DISPLAY_NAME}{SWS})?<(?P<b>[^<>\\s"]++)>|(?P<a>[^<>\\s";?,]++)){PARAMS}{SWS}',
    re.S,
)

# -- other header values -------------------------------------------------------------------
# via-parm = sent-protocol LWS sent-by *(SEMI via-params) [§20.42]
VIA_PARM: Final = LazyPattern(
    f"{TOKEN}{SWS}/{SWS}{TOKEN}{SWS}/{SWS}{TOKEN}{LWS}{HOST}(?:{SWS}:{SWS}{PORT})?{PARAMS}{SWS}",
    re.S,
)
# Allow / Supported / Require / Proxy-Require / Unsupported: [token *(COMMA token)]
TOKEN_LIST: Final = LazyPattern(f"(?:{TOKEN}(?:{SWS},{SWS}{TOKEN})*+)?")
# Call-ID = word ["@" word]; word adds ( ) < > : \ " / [ ] ? { } to the token characters
WORD: Final = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+"
CALL_ID: Final = LazyPattern(f"{WORD}(?:@{WORD})?")
# CSeq = 1*DIGIT LWS Method [§20.16]; RAck = response-num LWS CSeq-num LWS Method [RFC 3262]
CSEQ: Final = LazyPattern(f"[0-9]+{LWS}{TOKEN}")
RACK: Final = LazyPattern(f"[0-9]+{LWS}[0-9]+{LWS}{TOKEN}")
# Content-Type / Content-Disposition [§20.11, §20.15]
MEDIA_TYPE: Final = LazyPattern(f"{TOKEN}{SWS}/{SWS}{TOKEN}{PARAMS}{SWS}", re.S)
DISPOSITION: Final = LazyPattern(f"{TOKEN}{PARAMS}{SWS}", re.S)
# delta-seconds with params (Session-Expires, Min-SE); Retry-After adds a comment [§20.33]
DELTA_PARAMS: Final = LazyPattern(f"[0-9]+{PARAMS}{SWS}", re.S)
RETRY_AFTER: Final = LazyPattern(
    f"[0-9]+{SWS}(?:\\((?:[^()\\\\]|\\\\.)*+\\){SWS})?{PARAMS}{SWS}", re.S
)
# token *(SEMI params): Reason protocol [RFC 3326 §2], Event [RFC 6665 §8.2.1]
PROTOCOL_PARAMS: Final = LazyPattern(f"{TOKEN}{PARAMS}{SWS}", re.S)
# rfc1123-date in GMT [§20.17, RFC 4475 baddate]
RFC1123_DATE: Final = LazyPattern(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    r"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)
# warning-value = 3DIGIT SP warn-agent SP quoted-string [§20.43]
WARNING_VALUE: Final = LazyPattern(f'[0-9]{{3}} [^\\s"]++ {QUOTED}', re.S)

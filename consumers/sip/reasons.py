"""Stable reason codes for malformed SIP messages and SDP bodies.

A message's `malformed_reasons` holds these values (plain `str`), in the order the problems
were found, each code once. They are the keys of the malformed-message counters and the
ClickHouse column, so a code is never renamed, only added. RFC sections and the RFC 4475
torture message that exercises a code are noted beside it.
"""

from __future__ import annotations

from typing import Final

from mypy_extensions import mypyc_attr


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class Malformed:
    """Reason codes of `SipMessage.malformed_reasons`."""

    # -- framing and start line [RFC 3261 §7.1, §7.2, §7.5, §18.3]
    # nothing but CR/LF (a keep-alive), or no bytes at all
    EMPTY: Final = "empty"
    # not "Method SP URI SP Version" / "Version SP Code SP Phrase" (lwsstart, trws, lwsruri)
    BAD_START_LINE: Final = "bad_start_line"
    # request method is not a token
    BAD_METHOD: Final = "bad_method"
    # not SIP/2.0 (badvers)
    BAD_VERSION: Final = "bad_version"
    # not 3 digits in 100..699 (bigcode)
    BAD_STATUS_CODE: Final = "bad_status_code"
    # R-URI unparseable, enclosed in <> (ltgtruri), or carrying ?headers (escruri)
    BAD_REQUEST_URI: Final = "bad_request_uri"
    # no colon, a name that is not a token, or a fold with nothing to fold into
    BAD_HEADER_LINE: Final = "bad_header_line"
    # header section not closed by an empty line
    MISSING_BLANK_LINE: Final = "missing_blank_line"
    # Content-Length not 1*DIGIT, e.g. negative (ncl)
    BAD_CONTENT_LENGTH: Final = "bad_content_length"
    # more than one Content-Length (mcl01)
    CONTENT_LENGTH_MULTI: Final = "content_length_multi"
    # fewer body bytes than Content-Length (clerr); the body is kept as received
    TRUNCATED_BODY: Final = "truncated_body"

    # -- mandatory headers [RFC 3261 §8.1.1] (insuf)
    MISSING_CALL_ID: Final = "missing_call_id"
    MISSING_CSEQ: Final = "missing_cseq"
    MISSING_FROM: Final = "missing_from"
    MISSING_TO: Final = "missing_to"
    MISSING_VIA: Final = "missing_via"
    # a header allowed once appears again (multi01)
    DUPLICATE_HEADER: Final = "duplicate_header"

    # -- header values
    BAD_CALL_ID: Final = "bad_call_id"
    # not "number SP method", or number > 2**32-1 (scalar02, scalarlg)
    BAD_CSEQ: Final = "bad_cseq"
    # request method differs from the CSeq method (mismatch01, mismatch02)
    CSEQ_METHOD_MISMATCH: Final = "cseq_method_mismatch"
    BAD_VIA: Final = "bad_via"
    # From/To/Contact/Route/Record-Route/Refer-To syntax (quotbal, baddn, badaspec, regbadct)
    BAD_NAME_ADDR: Final = "bad_name_addr"
    # a URI inside a header value
    BAD_URI: Final = "bad_uri"
    # not digits, or > 255 (scalar02)
    BAD_MAX_FORWARDS: Final = "bad_max_forwards"
    # Expires header or Contact expires param not digits or > 2**32-1 (scalar02)
    BAD_EXPIRES: Final = "bad_expires"
    BAD_CONTENT_TYPE: Final = "bad_content_type"
    BAD_CONTENT_DISPOSITION: Final = "bad_content_disposition"
    # Date not an rfc1123-date in GMT (baddate)
    BAD_DATE: Final = "bad_date"
    BAD_RETRY_AFTER: Final = "bad_retry_after"
    # warn-code not 3 digits etc. (scalarlg)
    BAD_WARNING: Final = "bad_warning"
    # Allow/Supported/Require/Proxy-Require/Unsupported element not a token
    BAD_TOKEN_LIST: Final = "bad_token_list"
    BAD_SESSION_EXPIRES: Final = "bad_session_expires"
    BAD_MIN_SE: Final = "bad_min_se"
    BAD_RSEQ: Final = "bad_rseq"
    BAD_RACK: Final = "bad_rack"
    BAD_REASON: Final = "bad_reason"
    BAD_SESSION_ID: Final = "bad_session_id"
    BAD_EVENT: Final = "bad_event"
    BAD_REPLACES: Final = "bad_replaces"

    # a bug in this parser: an accessor raised and returned its fallback instead
    PARSER_ERROR: Final = "parser_error"


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class SdpMalformed:
    """Reason codes of `Sdp.malformed_reasons` [RFC 4566 §5]."""

    EMPTY: Final = "sdp_empty"
    # not <type>=<value> with a one-letter lower-case type
    BAD_LINE: Final = "sdp_bad_line"
    # first line is not v=0
    BAD_VERSION: Final = "sdp_bad_version"
    MISSING_ORIGIN: Final = "sdp_missing_origin"
    BAD_ORIGIN: Final = "sdp_bad_origin"
    MISSING_SESSION_NAME: Final = "sdp_missing_session_name"
    MISSING_TIMING: Final = "sdp_missing_timing"
    BAD_CONNECTION: Final = "sdp_bad_connection"
    # a media description with no c= at media or session level
    MISSING_CONNECTION: Final = "sdp_missing_connection"
    BAD_MEDIA: Final = "sdp_bad_media"
    BAD_RTPMAP: Final = "sdp_bad_rtpmap"
    BAD_FMTP: Final = "sdp_bad_fmtp"
    BAD_PTIME: Final = "sdp_bad_ptime"
    PARSER_ERROR: Final = "sdp_parser_error"


def all_codes(kind: type) -> frozenset[str]:
    """Every code a reason class defines (for schema enums and tests)."""
    return frozenset(v for k, v in vars(kind).items() if k.isupper() and isinstance(v, str))

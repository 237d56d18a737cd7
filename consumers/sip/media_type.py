"""Content-Type and Content-Disposition values (message level and multipart part level).

Content-Type = m-type SLASH m-subtype *(SEMI m-parameter) [RFC 3261 §20.15, RFC 2045 §5];
Content-Disposition = disp-type *(SEMI disp-param), disp-type "render" / "session" / "icon"
/ "alert" / token, handling-param "optional" / "required" [RFC 3261 §20.11]. Types,
subtypes and parameter names are case-insensitive and are lower-cased; parameter values keep
their case (a multipart boundary is case-sensitive, RFC 2046 §5.1.1).
"""

from __future__ import annotations

from mypy_extensions import mypyc_attr

from consumers.sip.lexing import Params, parse_params
from consumers.value import Value


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class MediaType(Value):
    """Shared by every message with the same text (memoised): never modified."""

    FIELDS = ("type", "subtype", "params")

    def __init__(self, type: str, subtype: str, params: Params | None = None) -> None:
        self.type = type
        self.subtype = subtype
        self.params: Params = {} if params is None else params

    @property
    def mime(self) -> str:
        return f"{self.type}/{self.subtype}"

    @property
    def boundary(self) -> str | None:
        return self.params.get("boundary")


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class ContentDisposition(Value):
    """Shared by every message with the same text (memoised): never modified."""

    FIELDS = ("type", "params")

    def __init__(self, type: str, params: Params | None = None) -> None:
        self.type = type  # lower-cased: session, render, icon, alert, early-session, ...
        self.params: Params = {} if params is None else params

    @property
    def handling(self) -> str | None:
        value = self.params.get("handling")
        return value.lower() if value else None


def parse_media_type(value: str) -> MediaType | None:
    """None when the value has no type/subtype."""
    mime, semi, rest = value.partition(";")
    type_, slash, subtype = mime.partition("/")
    type_ = type_.strip(" \t").lower()
    subtype = subtype.strip(" \t").lower()
    if not slash or not type_ or not subtype:
        return None
    return MediaType(type_, subtype, parse_params(";" + rest) if semi else {})


def parse_disposition(value: str) -> ContentDisposition | None:
    disp, semi, rest = value.partition(";")
    disp = disp.strip(" \t").lower()
    if not disp:
        return None
    return ContentDisposition(disp, parse_params(";" + rest) if semi else {})

"""URIs as they appear in SIP: SIP/SIPS URIs taken apart, tel URIs, other schemes opaque.

SIP-URI = "sip:" [ userinfo ] hostport uri-parameters [ headers ] [RFC 3261 §19.1.1, §25.1];
tel URI = number *(";" param) [RFC 3966]; any other scheme per absoluteURI [§25.1]. %-escapes
are resolved once, only inside SIP/SIPS URIs (user, password, parameter names and values,
header names and values), never in the host (RFC 4475 §3.1.1.3-3.1.1.5). The user part may
legally hold ';', '?', '/' and ',' (RFC 4475 semiuri, intmeth), so it ends at the first '@'.
Extraction is liberal; `Uri.errors` runs the strict grammar (`grammar.uri_ok`).
"""

from __future__ import annotations

from mypy_extensions import mypyc_attr

from consumers.sip.grammar import uri_ok
from consumers.sip.lexing import Params, parse_params, percent_unescape
from consumers.sip.reasons import Malformed
from consumers.value import Value


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class Uri(Value):
    """A parsed URI. For schemes other than sip/sips/tel only `scheme` and `opaque` are
    filled (tel: puts the number in `user` and fills `params`)."""

    FIELDS = ("raw", "scheme", "user", "password", "host", "port", "params", "headers", "opaque")

    def __init__(
        self,
        raw: str,
        scheme: str,
        user: str | None = None,
        password: str | None = None,
        host: str = "",
        port: int | None = None,
        params: Params | None = None,
        headers: dict[str, str] | None = None,
        opaque: str = "",
    ) -> None:
        self.raw = raw
        self.scheme = scheme  # lower-cased; "" when there was none
        self.user = user  # unescaped
        self.password = password  # unescaped
        self.host = host  # as written; IPv6 references keep their brackets
        self.port = port  # None when absent or not a valid port
        # names lower-cased, unescaped; "" = no value
        self.params: Params = {} if params is None else params
        self.headers: dict[str, str] = {} if headers is None else headers  # ?name=value
        self.opaque = opaque  # everything after "scheme:"

    @property
    def is_sip(self) -> bool:
        return self.scheme == "sip" or self.scheme == "sips"

    @property
    def lr(self) -> bool:
        return "lr" in self.params

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def host_port(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def errors(self) -> list[str]:
        """["bad_uri"] unless the text matches the URI grammar of its scheme."""
        return [] if uri_ok(self.raw) else [Malformed.BAD_URI]


def parse_uri(raw: str) -> Uri:
    """Take a URI apart (no surrounding <>). Never raises."""
    colon = raw.find(":")
    if colon <= 0:
        return Uri(raw, "", opaque=raw)
    scheme = raw[:colon].lower()
    rest = raw[colon + 1 :]
    uri = Uri(raw, scheme, opaque=rest)
    if scheme == "sip" or scheme == "sips":
        _take_apart_sip(uri, rest)
    elif scheme == "tel":
        number, semi, param_text = rest.partition(";")
        uri.user = number
        if semi:
            uri.params = parse_params(";" + param_text)
    return uri


def _take_apart_sip(uri: Uri, rest: str) -> None:
    at = rest.find("@")
    if at >= 0:
        user, colon, password = rest[:at].partition(":")
        hostpart = rest[at + 1 :]
        uri.user = percent_unescape(user)
        if colon:
            uri.password = percent_unescape(password)
    else:
        hostpart = rest
    qmark = hostpart.find("?")
    if qmark >= 0:
        for pair in hostpart[qmark + 1 :].split("&"):
            name, _, value = pair.partition("=")
            if name:
                uri.headers.setdefault(percent_unescape(name), percent_unescape(value))
        hostpart = hostpart[:qmark]
    semi = hostpart.find(";")
    if semi >= 0:
        param_text = hostpart[semi:]
        hostpart = hostpart[:semi]
        params = parse_params(param_text)
        if "%" in param_text:
            unescaped: Params = {}
            for name, value in params.items():
                unescaped.setdefault(percent_unescape(name).lower(), percent_unescape(value))
            params = unescaped
        uri.params = params
    if hostpart[:1] == "[":
        close = hostpart.find("]")
        if close < 0:
            uri.host = hostpart
            return
        uri.host = hostpart[: close + 1]
        port_text = hostpart[close + 2 :] if hostpart[close + 1 : close + 2] == ":" else ""
    else:
        uri.host, _, port_text = hostpart.partition(":")
    if port_text and len(port_text) <= 5 and port_text.isascii() and port_text.isdigit():
        port = int(port_text)
        uri.port = port if port <= 65535 else None

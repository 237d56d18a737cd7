"""Via header values.

via-parm = sent-protocol LWS sent-by *(SEMI via-params); sent-protocol = protocol-name SLASH
protocol-version SLASH transport with SLASH = SWS "/" SWS; sent-by = host [COLON port]
[RFC 3261 §20.42, §25.1]. Params: branch (magic cookie "z9hG4bK" marks RFC 3261
transactions, §8.1.1.7), received, rport (RFC 3581: empty in requests, a port in
responses), maddr, ttl, and any generic-param. RFC 4475 wsinv puts LWS around every part;
RFC 4475 transports has unknown transports (kept, upper-cased). Extraction is liberal;
`errors` runs the strict grammar (`grammar.VIA_PARM`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from mypy_extensions import mypyc_attr

from consumers.sip.grammar import VIA_PARM
from consumers.sip.lazy_pattern import LazyPattern
from consumers.sip.lexing import Params, parse_params, split_list
from consumers.sip.name_addr import NEEDS_PARSE
from consumers.sip.reasons import Malformed

MAGIC_COOKIE: Final = "z9hG4bK"
_WS: Final = " \t"
# Loose form for values with LWS inside sent-protocol (RFC 4475 wsinv).
_SENT_PROTOCOL: Final = LazyPattern(r"([^/\s]+)[ \t]*/[ \t]*([^/\s]+)[ \t]*/[ \t]*([^/\s;]+)[ \t]*")
_KNOWN: Final = frozenset(("branch", "received", "rport", "maddr", "ttl"))


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class Via:
    """One via-parm. `protocol` is "SIP/2.0"; `transport` is upper-cased."""

    __slots__ = ("_port_bad", "host", "params", "port", "protocol", "raw", "transport")

    def __init__(
        self,
        raw: str,
        protocol: str,
        transport: str,
        host: str,
        port: int | None,
        params: Params,
        port_bad: bool = False,
    ) -> None:
        self.raw = raw
        self.protocol = protocol
        self.transport = transport
        self.host = host  # as written; IPv6 references keep their brackets
        self.port = port  # None when absent or not a valid port
        self.params = params  # all params, names lower-cased, "" = no value
        self._port_bad = port_bad

    def __repr__(self) -> str:
        return f"Via({self.protocol}/{self.transport} {self.sent_by!r}, params={self.params!r})"

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def has_rfc3261_branch(self) -> bool:
        """Branch starts with the magic cookie and has more after it (RFC 4475 badbranch:
        exactly "z9hG4bK" does not count)."""
        branch = self.params.get("branch")
        return branch is not None and len(branch) > 7 and branch.startswith(MAGIC_COOKIE)

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def has_rport(self) -> bool:
        return "rport" in self.params

    @property
    def rport(self) -> int | None:
        value = self.params.get("rport")
        if value and len(value) <= 5 and value.isascii() and value.isdigit():
            return int(value)
        return None

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def ttl(self) -> int | None:
        value = self.params.get("ttl")
        if value and len(value) <= 3 and value.isascii() and value.isdigit():
            return int(value)
        return None

    @property
    def other_params(self) -> Params:
        return {k: v for k, v in self.params.items() if k not in _KNOWN}

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def errors(self) -> list[str]:
        """["bad_via"] unless the value matches the via-parm grammar with sane params."""
        if self._port_bad or VIA_PARM.fullmatch(self.raw) is None:
            return [Malformed.BAD_VIA]
        for key in ("branch", "received", "maddr"):
            if self.params.get(key) == "":
                return [Malformed.BAD_VIA]
        return []


def parse_via(text: str) -> Via:
    """Extract one via-parm (one comma-list element). Never raises."""
    s = text.strip(_WS)
    sp = s.find(" ")
    parts = s[:sp].split("/") if sp > 0 else ()
    if len(parts) == 3 and parts[0] and parts[1] and parts[2]:
        protocol = parts[0] + "/" + parts[1]
        transport = parts[2].upper()
        rest = s[sp + 1 :]
    else:
        m = _SENT_PROTOCOL.match(s)
        if m is None:
            return Via(s, "", "", "", None, {})
        protocol = m.group(1) + "/" + m.group(2)
        transport = m.group(3).upper()
        rest = s[m.end() :]
    semi = rest.find(";")
    sent_by = (rest[:semi] if semi >= 0 else rest).strip(_WS)
    if sent_by[:1] == "[":
        close = sent_by.find("]")
        host = sent_by[: close + 1] if close >= 0 else sent_by
        port_text = sent_by[close + 1 :].lstrip(_WS) if close >= 0 else ""
        port_text = port_text[1:].lstrip(_WS) if port_text[:1] == ":" else ""
    else:
        host, _, port_text = sent_by.partition(":")
        if " " in sent_by or "\t" in sent_by:
            host = host.strip(_WS)
            port_text = port_text.strip(_WS)
    port: int | None = None
    port_bad = False
    if port_text:
        if len(port_text) <= 5 and port_text.isascii() and port_text.isdigit():
            port = int(port_text)
        if port is None or port > 65535:
            port, port_bad = None, True
    params = parse_params(rest[semi:]) if semi >= 0 else {}
    return Via(s, protocol, transport, host, port, params, port_bad)


def fast_branch(first_line: str) -> Any:  # str, None or NEEDS_PARSE
    """Branch of the first Via value on a header line without parsing it, or NEEDS_PARSE."""
    if "," in first_line or '"' in first_line:
        return NEEDS_PARSE
    start = first_line.find(";branch=")
    if start < 0:
        return NEEDS_PARSE
    start += 8
    end = first_line.find(";", start)
    branch = first_line[start:end] if end >= 0 else first_line[start:]
    if not branch or " " in branch or "\t" in branch:
        return NEEDS_PARSE
    return branch


def origin_key(text: str) -> tuple[str, str]:
    """(branch or "", sent-by) of one via-parm: what `parse_via(text)` gives as
    `(via.branch or "", via.sent_by)`, without building the Via for the common shape (no
    quotes, no LWS after sent-protocol, no IPv6 reference); anything else is parsed."""
    s = text.strip(_WS)
    sp = s.find(" ")
    if sp > 0:
        rest = s[sp + 1 :]
        parts = s[:sp].split("/")
        if (
            len(parts) == 3
            and parts[0]
            and parts[1]
            and parts[2]
            and rest[:1] != "["
            and '"' not in rest
            and " " not in rest
            and "\t" not in rest
        ):
            semi = rest.find(";")
            host, _, port_text = (rest[:semi] if semi >= 0 else rest).partition(":")
            sent_by = host
            if port_text and len(port_text) <= 5 and port_text.isascii() and port_text.isdigit():
                port = int(port_text)
                if port <= 65535:
                    sent_by = f"{host}:{port}"
            branch = ""
            if semi >= 0:
                for item in rest[semi + 1 :].split(";"):
                    name, _, value = item.partition("=")
                    if name and name.lower() == "branch":
                        branch = value
                        break
            return (branch, sent_by)
    via = parse_via(text)
    return (via.branch or "", via.sent_by)


def bottom_via_text(values: Sequence[str]) -> str | None:
    """The last Via value of a message as text (the last element `parse_via_values` would
    parse), without splitting the others."""
    for i in range(len(values) - 1, -1, -1):
        value = values[i]
        if "," in value:
            for element in reversed(split_list(value)):
                if element:
                    return element
        elif value:
            return value
    return None


def parse_via_values(values: Sequence[str]) -> list[Via]:
    """All Via values of a message in order: header lines in order, each comma-split.
    Empty elements (",,") are skipped here; validation reports them."""
    vias: list[Via] = []
    for value in values:
        if "," in value:
            vias.extend(parse_via(element) for element in split_list(value) if element)
        elif value:
            vias.append(parse_via(value))
    return vias


def parse_top_via(values: Sequence[str]) -> Via | None:
    """Only the first Via value, without parsing the rest."""
    for value in values:
        if "," in value:
            for element in split_list(value):
                if element:
                    return parse_via(element)
        elif value:
            return parse_via(value)
    return None

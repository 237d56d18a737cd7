"""Headers that tie one call leg to another or to a dialog: Session-ID, P-Charging-Vector,
X-CID, Replaces, Event.

Session-ID = sess-id *(SEMI sess-id-param), sess-id = 32 lowercase hex, param
"remote=" sess-id [RFC 7989 §4, §5]; received ids are compared case-insensitively here and
returned lower-cased. P-Charging-Vector = icid-value *(SEMI charge-params) [RFC 7315 §4.6].
X-CID carries the A-leg Call-ID on the B-leg (HOMER / Kamailio convention, PROTOCOL.md
B.13): returned as written. Replaces = callid *(SEMI (to-tag / from-tag / early-flag /
generic-param)) [RFC 3891 §6.1]. Event = event-type *(SEMI event-param), id param
[RFC 6665 §8.2.1].
"""

from __future__ import annotations

import re
from typing import Final

from mypy_extensions import mypyc_attr

from consumers.sip.grammar import CALL_ID, TOKEN
from consumers.sip.lazy_pattern import LazyPattern
from consumers.sip.lexing import Params, parse_params
from consumers.value import Value

_HEX32: Final = LazyPattern(r"[0-9A-Fa-f]{32}")
_LEAD_ITEM: Final = LazyPattern(r"([^;]*)(.*)", re.S)
_EVENT: Final = LazyPattern(f"({TOKEN})[ \\t]*(.*)", re.S)


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class SessionId(Value):
    FIELDS = ("local", "remote", "params")

    def __init__(self, local: str, remote: str | None = None, params: Params | None = None) -> None:
        self.local = local  # lower-cased 32 hex digits
        self.remote = remote
        self.params: Params = {} if params is None else params


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class ChargingVector(Value):
    FIELDS = ("icid_value", "params")

    def __init__(self, icid_value: str | None, params: Params | None = None) -> None:
        self.icid_value = icid_value
        self.params: Params = {} if params is None else params  # every one, icid-value too

    @property
    def orig_ioi(self) -> str | None:
        return self.params.get("orig-ioi")

    @property
    def term_ioi(self) -> str | None:
        return self.params.get("term-ioi")


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class Replaces(Value):
    FIELDS = ("call_id", "to_tag", "from_tag", "early_only", "params")

    def __init__(
        self,
        call_id: str,
        to_tag: str | None,
        from_tag: str | None,
        early_only: bool,
        params: Params | None = None,
    ) -> None:
        self.call_id = call_id
        self.to_tag = to_tag
        self.from_tag = from_tag
        self.early_only = early_only
        self.params: Params = {} if params is None else params


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class Event(Value):
    FIELDS = ("package", "id", "params")

    def __init__(self, package: str, id: str | None = None, params: Params | None = None) -> None:
        self.package = package  # event-type as written, e.g. "refer", "presence.winfo"
        self.id = id
        self.params: Params = {} if params is None else params


def parse_session_id(value: str) -> SessionId | None:
    m = _LEAD_ITEM.fullmatch(value)
    if m is None:
        return None
    local = m.group(1).strip(" \t")
    params = parse_params(m.group(2))
    if _HEX32.fullmatch(local) is None:
        return None
    remote = params.get("remote")
    if remote is not None:
        if _HEX32.fullmatch(remote) is None:
            return None
        remote = remote.lower()
    return SessionId(local.lower(), remote, params)


def parse_charging_vector(value: str) -> ChargingVector | None:
    # The first item is itself name=value ("icid-value=..."), so parse it as a param.
    params = parse_params(";" + value)
    if not params.get("icid-value"):
        return None
    return ChargingVector(params.get("icid-value"), params)


def parse_replaces(value: str) -> Replaces | None:
    m = _LEAD_ITEM.fullmatch(value)
    if m is None:
        return None
    call_id = m.group(1).strip(" \t")
    params = parse_params(m.group(2))
    if CALL_ID.fullmatch(call_id) is None:
        return None
    return Replaces(
        call_id, params.get("to-tag"), params.get("from-tag"), "early-only" in params, params
    )


def parse_event(value: str) -> Event | None:
    m = _EVENT.fullmatch(value.strip(" \t"))
    if m is None:
        return None
    params = parse_params(m.group(2))
    return Event(m.group(1), params.get("id"), params)

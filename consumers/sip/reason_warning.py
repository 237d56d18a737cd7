"""Reason and Warning header values: why a request or response happened, in words and codes.

Reason = reason-value *(COMMA reason-value); reason-value = protocol *(SEMI reason-params),
protocol "SIP" / "Q.850" / token, params cause=1*DIGIT and text=quoted-string [RFC 3326 §2].
Warning = warning-value *(COMMA warning-value); warning-value = warn-code SP warn-agent SP
warn-text, warn-code = 3DIGIT, warn-text = quoted-string [RFC 3261 §20.43]; RFC 4475
scalarlg has a 4-digit code, which is not extracted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from mypy_extensions import mypyc_attr

from consumers.sip.lazy_pattern import LazyPattern
from consumers.sip.lexing import Params, parse_params, split_list, unquote
from consumers.value import Value

_WARNING: Final = LazyPattern(r'([0-9]{3})[ \t]+([^\s"]+)[ \t]+("(?:[^"\\]|\\.)*+"?)', re.S)


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class ReasonValue(Value):
    FIELDS = ("protocol", "cause", "text", "params")

    def __init__(
        self,
        protocol: str,
        cause: int | None = None,
        text: str | None = None,
        params: Params | None = None,
    ) -> None:
        self.protocol = protocol  # as written: "SIP", "Q.850", ...
        self.cause = cause
        self.text = text  # unquoted
        self.params: Params = {} if params is None else params


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class WarningValue(Value):
    FIELDS = ("code", "agent", "text")

    def __init__(self, code: int, agent: str, text: str) -> None:
        self.code = code
        self.agent = agent
        self.text = text  # unquoted


def parse_reasons(values: Sequence[str]) -> list[ReasonValue]:
    out: list[ReasonValue] = []
    for value in values:
        for element in split_list(value):
            protocol, semi, rest = element.partition(";")
            protocol = protocol.strip(" \t")
            if not protocol:
                continue
            params = parse_params(";" + rest) if semi else {}
            cause_text = params.get("cause", "")
            cause = (
                int(cause_text)
                if cause_text and len(cause_text) <= 9 and cause_text.isascii()
                and cause_text.isdigit()
                else None
            )  # fmt: skip
            out.append(ReasonValue(protocol, cause, params.get("text"), params))
    return out


def parse_warnings(values: Sequence[str]) -> list[WarningValue]:
    out: list[WarningValue] = []
    for value in values:
        for element in split_list(value):
            m = _WARNING.fullmatch(element)
            if m is not None:
                out.append(WarningValue(int(m.group(1)), m.group(2), unquote(m.group(3))))
    return out

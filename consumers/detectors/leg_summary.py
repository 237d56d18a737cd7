"""C.12 first stage: emit the leg summaries the cross-leg correlator joins.

PROTOCOL.md C.12 (SBC/B2BUA converting or stripping UPDATE) needs both legs of a B2BUA,
which have different Call-IDs and so may sit in different partitions (C.0 rule 4). This
detector raises no anomaly itself: per call it emits one "setup" `LegRecord` (at the first
2xx to the initial INVITE [RFC 3261 §12.1], or earlier if a re-INVITE/UPDATE comes first)
and, per re-INVITE or UPDATE [RFC 3261 §14; RFC 3311 §5], a "request" record and a "final"
record. `consumers.legs.correlator` turns them into the C.12 anomalies.

Not summarised: retransmissions (the tracker's flag), requests the observed proxy generated
(C.0 rule 3), in-dialog requests whose dialog is unknown, PRACK (not a session modification
between legs), and the initial INVITE's own attempts.
"""

from __future__ import annotations

from typing import ClassVar, Final

from mypy_extensions import mypyc_attr

from consumers.dedup import ORIGIN_PROXY
from consumers.detectors.base import Detector, Event, Output
from consumers.legs.summary import SESSION_METHODS, final_record, request_record, setup_record

_SETUP_DONE: Final = "leg_setup"


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class LegSummaryDetector(Detector):
    name = "leg_summary"
    family = "C.12"
    requests: ClassVar[frozenset[str] | None] = frozenset(SESSION_METHODS)
    responses: ClassVar[frozenset[str] | None] = frozenset(SESSION_METHODS)
    statuses: ClassVar[tuple[int, int]] = (200, 699)
    retransmissions: ClassVar[bool] = False

    def on_event(self, ev: Event, out: Output) -> None:
        if ev.retransmission:
            return
        msg = ev.msg
        call = ev.call
        tx = ev.tx
        if msg.is_response:
            if tx is None or ev.status < 200:
                return
            if tx.initial:
                if ev.status < 300 and ev.dialog is not None and not _setup_done(call.ext):
                    self._setup(ev, out)
                return
            if (
                tx.method in SESSION_METHODS
                and tx.final is ev.lm
                and tx.dialog is not None
                and tx.request is not None
                and tx.request.origin != ORIGIN_PROXY
            ):
                out.emit(final_record(ev, out.now_us))
            return
        if (
            ev.method not in SESSION_METHODS
            or not msg.to_tag
            or ev.dialog is None
            or ev.unknown_dialog
            or ev.proxy_generated
        ):
            return
        if not _setup_done(call.ext):
            self._setup(ev, out)
        out.emit(request_record(ev, out.now_us))

    def _setup(self, ev: Event, out: Output) -> None:
        ev.call.ext_for(_SETUP_DONE, lambda: True)
        out.emit(setup_record(ev, out.now_us))


def _setup_done(ext: dict[str, object] | None) -> bool:
    return ext is not None and _SETUP_DONE in ext


DETECTOR = LegSummaryDetector

"""422 (Session Interval Too Small) chains: PROTOCOL.md C.9 (RFC 4028 §5 to §9).

What it owns: the chain INVITE/UPDATE -> 422 -> retry -> ... of one requester, kept per
Call-ID while no dialog exists (the initial INVITE and its retries) and per dialog after
(mid-dialog refreshes), and the anomalies found along it.

Rules:
- A 422 MUST carry Min-SE with the issuer's minimum [§6]: `422_missing_min_se` (medium).
- A proxy or UAS sends 422 only to a request with Supported: timer [§8.1, §9]; otherwise it
  raises the interval itself. `422_to_non_timer_request` (medium) judges the request as the
  issuer got it: the proxy's in-copy when the observed proxy answered, the out-copy when a
  downstream element did.
- The retry keeps Call-ID, From, To; its CSeq is the 422'd request's + 1 [§7.3]
  (`422_retry_cseq`, low; other requests of the same side in between move the base); its
  Min-SE is at least the largest Min-SE of all 422s of the chain [§7.4]
  (`422_retry_without_min_se`, medium) and its Session-Expires is not below that value
  (`422_retry_se_below_min_se`, medium). A 401/407 to a retry keeps the chain going: the
  re-authenticated request is held to the same rules.
- `422_loop` (high): a 422 whose Min-SE is not larger than what the retry already carried
  (the larger of its Session-Expires and Min-SE: the requester cannot fix it), or more 422s
  in one chain than `max_normal_chain` (3). Several proxies that each raise Min-SE once make
  a normal chain of 2 or 3 distinct rising 422s, which is not reported.
- A 422 to a mid-dialog refresh is legal [§10] though RFC 5057 note 5 calls it aberrant:
  `422_mid_dialog` (info).

Records are written when the chain ends, so that every row carries the chain's outcome: at
the first final response other than 422/401/407 to a retry, when no retry came within
`retry_window_ms` of the last 422, or when the call ends. Fields: `chain_len` (422s),
`min_se_values` and `se_values` (per 422 and per request, 0 when absent), `issuer`
("proxy" when the observed proxy generated the 422, else "uas": a downstream element;
`issuer_ua` names it when its Server header does), `final_outcome_status` (0 when unknown).
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

from mypy_extensions import mypyc_attr

from consumers.dedup import LogicalMessage
from consumers.detectors.base import Detector, Output
from consumers.detectors.session_timer import has_timer, hop_copies
from consumers.records import Severity
from consumers.tracking.model import Call, Transaction, other
from consumers.tracking.tracker import Event

FAMILY: Final = "C.9"
CHAINS_KEY: Final = "min_se_422"

# (scope: "" before the dialog, else the callee tag; requester side)
ChainKey = tuple[str, int]


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class _Finding:
    __slots__ = ("extra", "lm", "name", "severity", "side")

    def __init__(
        self, name: str, severity: Severity, lm: LogicalMessage, side: int, extra: dict[str, Any]
    ) -> None:
        self.name = name
        self.severity = severity
        self.lm = lm
        self.side = side
        self.extra = extra


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class _Chain:
    """One requester's run of 422s and retries."""

    __slots__ = (
        "awaiting_retry",
        "base_cseq",
        "carried",
        "evidence",
        "findings",
        "gen",
        "issuer",
        "issuer_ua",
        "min_se_values",
        "outcome",
        "se_values",
        "tx_cseq",
    )

    def __init__(self) -> None:
        self.min_se_values: list[int] = []  # per 422 (0: no Min-SE)
        self.se_values: list[int] = []  # per request of the chain (0: no Session-Expires)
        self.findings: dict[str, _Finding] = {}
        self.evidence: list[LogicalMessage] = []
        self.tx_cseq = 0  # CSeq of the request the chain waits on
        self.base_cseq = 0  # the retry must be this + 1
        self.carried = 0  # what the current request carried: max(Session-Expires, Min-SE)
        self.awaiting_retry = False
        self.issuer = ""
        self.issuer_ua = ""
        self.outcome = 0
        self.gen = 0

    @property
    def chain_len(self) -> int:
        return len(self.min_se_values)

    @property
    def largest_min_se(self) -> int:
        return max(self.min_se_values, default=0)


@mypyc_attr(allow_interpreted_subclasses=True, serializable=True)
class Min422Detector(Detector):
    name: ClassVar[str] = "min_se_422"
    family: ClassVar[str] = FAMILY
    responses: ClassVar[frozenset[str] | None] = frozenset({"INVITE", "UPDATE"})
    statuses: ClassVar[tuple[int, int]] = (200, 699)
    retransmissions: ClassVar[bool] = False

    max_normal_chain: ClassVar[int] = 3
    max_evidence: ClassVar[int] = 12

    def __init__(self, t1_ms: int = 500) -> None:
        self.t1_ms = t1_ms

    @property
    def retry_window_ms(self) -> int:
        return 64 * self.t1_ms

    # -- hooks -----------------------------------------------------------------------------

    def on_event(self, ev: Event, out: Output) -> None:
        if ev.retransmission:
            return
        tx = ev.tx
        msg = ev.msg
        if msg.is_request:
            if tx is not None and msg.method in ("INVITE", "UPDATE"):
                self._request(ev, out, tx)
            elif msg.method not in ("ACK", "CANCEL"):
                self._other_request(ev)
            return
        if tx is None or ev.method not in ("INVITE", "UPDATE") or ev.status < 200:
            return
        key = self._key(ev.call, tx)
        if ev.status == 422:
            self._on_422(ev, out, tx, key)
            return
        chains = _chains(ev.call)
        chain = chains.get(key) if chains is not None else None
        if chain is None or chain.awaiting_retry or tx.cseq != chain.tx_cseq:
            return
        if ev.status in (401, 407):
            chain.awaiting_retry = True  # re-authentication continues the chain
            chain.base_cseq = tx.cseq
            chain.gen += 1
            due = max(ev.t, ev.t_out) + self.retry_window_ms * 1000
            out.schedule(due, ev.call, "retry_window", (key, chain.gen))
            return
        chain.outcome = ev.status
        chain.evidence.append(ev.lm)
        self._resolve(ev.call, key, out)

    def on_timer(self, call: Call, key: str, data: Any, out: Output) -> None:
        chain_key, gen = data
        chains = _chains(call)
        chain = chains.get(chain_key) if chains is not None else None
        if chain is not None and chain.gen == gen and chain.awaiting_retry:
            chain.outcome = 422
            self._resolve(call, chain_key, out)

    def on_call_end(self, call: Call, out: Output) -> None:
        chains = _chains(call)
        if not chains:
            return
        for key, chain in list(chains.items()):
            if chain.awaiting_retry:
                chain.outcome = 422
            self._resolve(call, key, out)

    # -- chain -----------------------------------------------------------------------------

    def _key(self, call: Call, tx: Transaction) -> ChainKey:
        dialog = tx.dialog
        if tx.initial or dialog is None:
            return ("", tx.side)
        return (dialog.callee_tag, tx.side)

    def _on_422(self, ev: Event, out: Output, tx: Transaction, key: ChainKey) -> None:
        call = ev.call
        chains = call.ext_for(CHAINS_KEY, dict)
        chain = chains.get(key)
        if chain is not None and (chain.awaiting_retry or tx.cseq != chain.tx_cseq):
            self._resolve(call, key, out)  # an unrelated earlier chain
            chain = None
        if chain is None:
            chain = chains[key] = _Chain()
            req_se = self._carried(tx)
            chain.se_values.append(req_se[0])
            chain.carried = max(req_se)
            if tx.request is not None:
                chain.evidence.append(tx.request)
        msg = ev.msg
        responder = other(tx.side)
        min_se = msg.min_se
        previous_largest = chain.largest_min_se
        chain.min_se_values.append(min_se or 0)
        chain.issuer = "proxy" if ev.proxy_generated else "uas"
        chain.issuer_ua = msg.server or msg.user_agent or ""
        chain.tx_cseq = tx.cseq
        chain.base_cseq = tx.cseq
        chain.awaiting_retry = True
        chain.gen += 1
        self._keep(chain, ev.lm)
        issuer = {"issuer": chain.issuer, "issuer_ua": chain.issuer_ua or None}
        if min_se is None:
            self._find(chain, "422_missing_min_se", Severity.MEDIUM, ev.lm, responder, issuer)
        if tx.request is not None:
            req_in, req_out = hop_copies(tx.request)
            seen = req_in if ev.proxy_generated else req_out
            if not has_timer(seen.supported):
                self._find(
                    chain, "422_to_non_timer_request", Severity.MEDIUM, ev.lm, responder, issuer
                )
        if key[0]:
            self._find(chain, "422_mid_dialog", Severity.INFO, ev.lm, responder, issuer)
        if chain.chain_len > 1 and min_se is not None and min_se <= chain.carried:
            self._find(
                chain,
                "422_loop",
                Severity.HIGH,
                ev.lm,
                responder,
                {**issuer, "cause": "min_se_not_raised", "previous_min_se": previous_largest},
            )
        elif chain.chain_len > self.max_normal_chain:
            self._find(
                chain, "422_loop", Severity.HIGH, ev.lm, responder, {**issuer, "cause": "length"}
            )
        due = max(ev.t, ev.t_out) + self.retry_window_ms * 1000
        out.schedule(due, call, "retry_window", (key, chain.gen))

    def _request(self, ev: Event, out: Output, tx: Transaction) -> None:
        if ev.proxy_generated:
            return
        call = ev.call
        if not tx.initial and ev.dialog is None:
            return
        key = self._key(call, tx)
        chains = _chains(call)
        chain = chains.get(key) if chains is not None else None
        if chain is None or not chain.awaiting_retry:
            return
        chain.awaiting_retry = False
        chain.tx_cseq = tx.cseq
        self._keep(chain, ev.lm)
        msg = ev.msg
        se = msg.session_expires
        min_se = msg.min_se
        chain.se_values.append(se.delta if se is not None else 0)
        chain.carried = max(se.delta if se is not None else 0, min_se or 0)
        largest = chain.largest_min_se
        side = tx.side
        if largest and (min_se is None or min_se < largest):
            self._find(
                chain,
                "422_retry_without_min_se",
                Severity.MEDIUM,
                ev.lm,
                side,
                {"retry_min_se": min_se, "required_min_se": largest},
            )
        if largest and se is not None and se.delta < largest:
            self._find(
                chain,
                "422_retry_se_below_min_se",
                Severity.MEDIUM,
                ev.lm,
                side,
                {"retry_se": se.delta, "required_min_se": largest},
            )
        if tx.cseq != chain.base_cseq + 1:
            self._find(
                chain,
                "422_retry_cseq",
                Severity.LOW,
                ev.lm,
                side,
                {"retry_cseq": tx.cseq, "expected_cseq": chain.base_cseq + 1},
            )

    def _other_request(self, ev: Event) -> None:
        """Another request of the requester moves the base of the retry's CSeq."""
        chains = _chains(ev.call)
        if not chains or ev.dialog is None:
            return
        chain = chains.get((ev.dialog.callee_tag, ev.side))
        if chain is not None and chain.awaiting_retry and ev.cseq > chain.base_cseq:
            chain.base_cseq = ev.cseq

    def _carried(self, tx: Transaction) -> tuple[int, int]:
        if tx.request is None:
            return (0, 0)
        msg = tx.request.msg
        se = msg.session_expires
        return (se.delta if se is not None else 0, msg.min_se or 0)

    def _find(
        self,
        chain: _Chain,
        name: str,
        severity: Severity,
        lm: LogicalMessage,
        side: int,
        extra: dict[str, Any],
    ) -> None:
        if name not in chain.findings:
            chain.findings[name] = _Finding(name, severity, lm, side, extra)

    def _keep(self, chain: _Chain, lm: LogicalMessage) -> None:
        if len(chain.evidence) < self.max_evidence:
            chain.evidence.append(lm)

    def _resolve(self, call: Call, key: ChainKey, out: Output) -> None:
        chains = _chains(call)
        chain = chains.pop(key, None) if chains is not None else None
        if chains is not None and not chains and call.ext is not None:
            del call.ext[CHAINS_KEY]
        if chain is None:
            return
        dialog = call.dialogs.get(key[0]) if key[0] else None
        for finding in chain.findings.values():
            out.anomaly(
                finding.name,
                finding.severity,
                FAMILY,
                call=call,
                lm=finding.lm,
                dialog=dialog,
                side=finding.side,
                evidence=[finding.lm, *chain.evidence],
                chain_len=chain.chain_len,
                min_se_values=list(chain.min_se_values),
                se_values=list(chain.se_values),
                final_outcome_status=chain.outcome,
                **({"issuer": chain.issuer} | finding.extra),
            )


def _chains(call: Call) -> dict[ChainKey, _Chain] | None:
    return call.ext.get(CHAINS_KEY) if call.ext else None


DETECTOR = Min422Detector

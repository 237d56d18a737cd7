"""The dialog state machine as a table (RFC 3261 §12, §13, §15; RFC 5407 §2 sub-states).

Rules, for a passive observer keyed by (Call-ID, caller tag, callee tag) (PROTOCOL.md C.0.5):

- PRE: the initial INVITE is out and no response carried a To-tag yet. Not a dialog yet;
  the call attempt holds this state.
- EARLY: a 101-199 with a To-tag created it [§12.1]; one per To-tag when forked [§13.2.2.1].
- MORATORIUM: a 2xx created or confirmed it and its ACK has not been seen [5407 App. D].
- ESTABLISHED: the ACK for the 2xx was seen.
- MORTAL: a BYE was sent; only BYE (and the late ACK for a 2xx) is legitimate [5407 §2].
- TERMINATED: a final response to the BYE, or a non-2xx final response to the initial
  INVITE for an early dialog [§12.3, §13.2.2.3].

Anything not in the table leaves the state as it is: an observer never refuses a message, it
records it and lets the detectors judge. Transitions are looked up, never computed.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class DialogState(StrEnum):
    PRE = "pre"
    EARLY = "early"
    MORATORIUM = "moratorium"
    ESTABLISHED = "established"
    MORTAL = "mortal"
    TERMINATED = "terminated"


class DialogEvent(StrEnum):
    PROVISIONAL = "tagged_1xx_to_initial_invite"
    SUCCESS = "2xx_to_initial_invite"
    FAILURE = "non_2xx_final_to_initial_invite"
    ACK = "ack_for_2xx"
    BYE = "bye"
    BYE_FINAL = "final_response_to_bye"


S, E = DialogState, DialogEvent

TRANSITIONS: Final[dict[tuple[DialogState, DialogEvent], DialogState]] = {
    (S.PRE, E.PROVISIONAL): S.EARLY,
    (S.PRE, E.SUCCESS): S.MORATORIUM,
    (S.PRE, E.FAILURE): S.TERMINATED,
    (S.EARLY, E.PROVISIONAL): S.EARLY,
    (S.EARLY, E.SUCCESS): S.MORATORIUM,
    (S.EARLY, E.FAILURE): S.TERMINATED,
    (S.EARLY, E.BYE): S.MORTAL,  # the caller may BYE an early dialog [§15]
    (S.MORATORIUM, E.ACK): S.ESTABLISHED,
    (S.MORATORIUM, E.BYE): S.MORTAL,
    (S.ESTABLISHED, E.BYE): S.MORTAL,
    (S.MORTAL, E.BYE_FINAL): S.TERMINATED,
    # A BYE's final response may be captured before a crossing BYE (5407 §3.2.1).
    (S.ESTABLISHED, E.BYE_FINAL): S.TERMINATED,
    (S.MORATORIUM, E.BYE_FINAL): S.TERMINATED,
    (S.EARLY, E.BYE_FINAL): S.TERMINATED,
}


def next_state(state: DialogState, event: DialogEvent) -> DialogState:
    return TRANSITIONS.get((state, event), state)

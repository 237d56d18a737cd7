"""The engine's message and dialog records: every field, from what the capture holds.

Each field gets a value no other field of its type has, so a value written to the wrong
field (the engine builds records positionally) fails here.
"""

from __future__ import annotations

import hashlib
import random

from sipflow import Flow, sdp

from consumers.engine import Engine, EngineConfig
from consumers.record_ids import record_id
from consumers.records import (
    DialogRecord,
    MessageRecord,
    ObservationRow,
)


def _id(*parts: object) -> str:
    data = b"".join(str(p).encode("utf-8", "surrogatepass") + b"\x1f" for p in parts)
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def test_record_id_is_blake2b_of_the_parts_each_ended_by_0x1f():
    for parts in [("bench/0/17",), ("c\udcff@x", "a1", "", 1_700_000_000_000_000), (), (3,)]:
        assert record_id(*parts) == _id(*parts)
    assert record_id("x") != record_id("x", "")
    # several parts are hashed as one text: the same bytes as part by part, also with
    # separators, lone surrogates and non-ASCII next to the part boundaries
    rng = random.Random(3)
    pieces = ["a", "\x1f", "\ud800", "\udc00", "é", "\U0001f600", "", "0"]
    for _ in range(20000):
        parts = [
            "".join(rng.choices(pieces, k=rng.randint(0, 3)))
            if rng.random() < 0.8
            else rng.randint(-5, 10**16)
            for _ in range(rng.randint(0, 5))
        ]
        assert record_id(*parts) == _id(*parts), parts


def _call() -> Flow:
    f = Flow("rec-1@test", caller_tag="ct9", callee_tag="ce7", a_ua="Phone-A/2", b_ua="PBX-B/3")
    inv = f.request(
        "A",
        "INVITE",
        in_dialog=False,
        body=sdp(addr="10.0.0.2"),
        headers=["Allow: UPDATE, INVITE, ACK", "Supported: timer, 100rel", "X-CID: leg-a@x"],
    )
    f.wait(0.05)
    f.response(inv, 180, headers=["Allow: INVITE, BYE"])
    f.wait(0.5)
    f.response(
        inv,
        200,
        reason="Fine Thanks",
        body=sdp(addr="10.0.0.3", session_id="2002"),
        headers=[
            "Allow: INVITE, ACK, BYE, UPDATE",
            "Require: timer",
            "Supported: replaces, timer",
            "Session-Expires: 1800;refresher=uas",
            "Min-SE: 600",
        ],
    )
    inv.to_tag = "ce7"
    f.wait(0.05)
    f.ack(inv)
    f.wait(2)
    f.bye("B")
    f.obs = [o.replace(correlation_id=f"corr-{o.ref}") for o in f.obs]
    return f


def test_message_and_dialog_ids_hash_their_parts():
    rng = random.Random(5)
    pieces = ["a", "\x1f", "\ud800", "\udc00", "é", "\U0001f600", "", "0", "@", "-"]

    def text() -> str:
        return "".join(rng.choices(pieces, k=rng.randint(0, 4)))

    for _ in range(5000):
        ref = text()
        assert record_id(ref) == _id(ref)
        parts = (text(), text(), text(), rng.randint(0, 10**16))
        assert record_id(*parts) == _id(*parts), parts


def test_message_record_fields_of_a_2xx():
    f = _call()
    records = f.engine_records(Engine(EngineConfig(), detectors=[]))
    ok = next(r for r in records if isinstance(r, MessageRecord) and r.status == 200)
    copies = [o for o in f.obs if o.payload.startswith(b"SIP/2.0 200 Fine")]
    first, out = copies
    assert ok == MessageRecord(
        id=_id(first.ref),
        event_time_us=first.ts_us,
        node="p1",
        capture_id=2001,
        call_id="rec-1@test",
        is_request=False,
        method="INVITE",
        status=200,
        reason_phrase="Fine Thanks",
        cseq=1,
        from_tag="ct9",
        to_tag="ce7",
        direction="callee_to_caller",
        dialog_state="early",
        origin="endpoint",
        retransmission=False,
        transport="udp",
        src_ip="10.0.0.3",
        src_port=5060,
        dst_ip="10.0.0.1",
        dst_port=5060,
        user_agent="PBX-B/3",
        allow=["ACK", "BYE", "INVITE", "UPDATE"],
        supported=["replaces", "timer"],
        require=["timer"],
        session_expires=1800,
        refresher="uas",
        min_se=600,
        has_sdp=True,
        sdp_role="answer",
        malformed=[],
        correlation_id=f"corr-{first.ref}",
        x_cid="",
        observations=[
            ObservationRow(
                o.ts_us, o.src_ip, o.src_port, o.dst_ip, o.dst_port, hop, o.ref, copies=1
            )
            for o, hop in ((first, "in"), (out, "out"))
        ],
        raw=first.payload,
    )


def test_message_record_fields_of_an_initial_invite():
    f = _call()
    records = f.engine_records(Engine(EngineConfig(keep_raw=False), detectors=[]))
    inv = next(r for r in records if isinstance(r, MessageRecord) and r.method == "INVITE")
    first = f.obs[0]
    assert (inv.id, inv.event_time_us, inv.is_request, inv.status, inv.reason_phrase) == (
        _id(first.ref),
        first.ts_us,
        True,
        0,
        "",
    )
    assert (inv.from_tag, inv.to_tag, inv.direction, inv.dialog_state) == (
        "ct9",
        "",
        "caller_to_callee",
        "pre",
    )
    assert (inv.user_agent, inv.allow, inv.supported, inv.require) == (
        "Phone-A/2",
        ["ACK", "INVITE", "UPDATE"],
        ["100rel", "timer"],
        None,
    )
    assert (inv.session_expires, inv.refresher, inv.min_se, inv.sdp_role) == (
        None,
        None,
        None,
        "offer",
    )
    assert (inv.x_cid, inv.correlation_id, inv.raw) == ("leg-a@x", f"corr-{first.ref}", b"")
    assert [row.hop for row in inv.observations] == ["in", "out"]


def test_dialog_record_fields_of_a_call_ended_by_the_callee():
    f = _call()
    records = f.engine_records(Engine(EngineConfig(), detectors=[]))
    (dialog,) = [r for r in records if isinstance(r, DialogRecord)]
    invite, ringing, ok = f.obs[0], f.obs[2], f.obs[4]  # first copies (in-copies)
    bye_ok = next(o for o in f.obs if o.payload.startswith(b"SIP/2.0 200 OK"))
    assert dialog == DialogRecord(
        id=_id("rec-1@test", "ct9", "ce7", invite.ts_us),
        node="p1",
        call_id="rec-1@test",
        caller_tag="ct9",
        callee_tag="ce7",
        state="terminated",
        start_time_us=invite.ts_us,
        early_time_us=ringing.ts_us,
        confirmed_time_us=ok.ts_us,
        end_time_us=bye_ok.ts_us,
        end_reason="bye",
        initial_status=200,
        call_id_owner="self",
        record_routed=True,
        caller_ua="Phone-A/2",
        callee_ua="PBX-B/3",
        caller_ip="10.0.0.2",
        callee_ip="10.0.0.3",
        reinvites=0,
        updates=0,
        pracks=0,
        anomalies=0,
        x_cid="leg-a@x",
        session_id_pair="",
        icid="",
        correlation_id=f"corr-{invite.ref}",
    )


def test_dialog_record_correlation_keys_from_the_first_message_that_has_them():
    f = Flow("rec-2@test")
    inv = f.request("A", "INVITE", in_dialog=False, body=sdp())
    f.wait(0.05)
    local, remote = "ab30317f1a784dc48ff824d0d3715d86", "47755a9de7794ba387653f2099600ef2"
    f.response(inv, 180, headers=[f"Session-ID: {remote};remote={local}"])
    f.wait(0.5)
    f.response(
        inv,
        200,
        body=sdp(addr="10.0.0.3"),
        headers=[
            "P-Charging-Vector: icid-value=1234bc9876e;icid-generated-at=192.0.6.8",
            "Session-ID: 00000000000000000000000000000000;remote=ffffffffffffffffffffffffffffffff",
            "X-CID: leg-a@x",
        ],
    )
    inv.to_tag = "b1"
    f.wait(0.05)
    f.ack(inv, headers=["X-CID: other@x", "P-Charging-Vector: icid-value=zzz"])
    ringing = 2  # the 180's first copy: the first HEP correlation id the call gets
    f.obs = [
        o.replace(correlation_id="hep-corr" if n == ringing else "") for n, o in enumerate(f.obs)
    ]
    records = f.engine_records(Engine(EngineConfig(), detectors=[]))
    (dialog,) = [r for r in records if isinstance(r, DialogRecord)]
    assert (dialog.session_id_pair, dialog.icid, dialog.x_cid, dialog.correlation_id) == (
        f"{remote},{local}" if remote < local else f"{local},{remote}",
        "1234bc9876e",
        "leg-a@x",
        "hep-corr",
    )

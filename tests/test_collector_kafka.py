"""`hepwatch collect` against a real Kafka-protocol broker (tansu), as a real subprocess.

Shows the record contract (key, value, timestamp, headers) for HEP v1, v2 and v3 over UDP,
TCP and TLS; that malformed and unauthenticated packets are counted and absent; that a
broker outage loses nothing and doubles nothing; and that a spool left by a stopped
collector is delivered by the next one.
"""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
import time
import uuid
from pathlib import Path

import pytest
from collector_proc import CollectorProcess
from hepbuild import hep3, hep12, sip_message
from kafka_broker import TansuBroker, consume, drain_extra

pytestmark = pytest.mark.integration


def _topic() -> str:
    return f"hep-{uuid.uuid4().hex[:10]}"


def _send_udp(port: int, packets: list[bytes], pace: float = 0.0) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for p in packets:
            s.sendto(p, ("127.0.0.1", port))
            if pace:
                time.sleep(pace)


def _send_tcp(port: int, data: bytes, chunk: int = 0) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        if not chunk:
            s.sendall(data)
        else:
            for i in range(0, len(data), chunk):
                s.sendall(data[i : i + chunk])
        s.shutdown(socket.SHUT_WR)
        s.settimeout(5)
        s.recv(1)  # wait for the collector to close after reading everything


def _headers(msg) -> dict[str, bytes]:
    return dict(msg.headers() or [])


def _self_signed(workdir: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = workdir / "cert.pem", workdir / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_v1_v2_v3_over_udp_tcp_tls_arrive_with_contract(
    tmp_path: Path, broker: TansuBroker
) -> None:
    topic = _topic()
    broker.create_topic(topic)
    cert, key = _self_signed(tmp_path)
    col = CollectorProcess(
        tmp_path,
        broker.bootstrap,
        topic,
        listeners=("udp", "tcp", "tls"),
        extra_toml=f'tls_cert = "{cert}"\ntls_key = "{key}"\n',
    )
    col.start()
    try:
        sent: dict[str, tuple[int, bytes]] = {}  # call-id -> (version, payload)
        udp_packets = []
        for version in (1, 2, 3):
            cid = f"udp-v{version}-{uuid.uuid4().hex[:6]}@test"
            payload = sip_message(cid)
            sent[cid] = (version, payload)
            udp_packets.append(
                hep3(payload, ts=(1700000100, 5000)) if version == 3 else hep12(version, payload)
            )
        v6cid = f"udp-v3-ipv6-{uuid.uuid4().hex[:6]}@test"
        sent[v6cid] = (3, sip_message(v6cid))
        udp_packets.append(hep3(sent[v6cid][1], src="2001:db8::1", dst="2001:db8::2"))
        _send_udp(col.udp_port, udp_packets)

        tcp_stream = b""
        for i in range(20):
            cid = f"tcp-{i}-{uuid.uuid4().hex[:6]}@test"
            sent[cid] = (3, sip_message(cid))
            tcp_stream += hep3(sent[cid][1])
        _send_tcp(col.tcp_port, tcp_stream, chunk=37)  # packets split across segments

        tls_stream = b""
        for i in range(5):
            cid = f"tls-{i}-{uuid.uuid4().hex[:6]}@test"
            sent[cid] = (3, sip_message(cid))
            tls_stream += hep3(sent[cid][1], ip_proto=22)
        ctx = ssl.create_default_context(cafile=str(cert))
        with (
            socket.create_connection(("127.0.0.1", col.tls_port)) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(tls_stream)
            col.wait_metric("hepwatch_collector_accepted_packets_total", len(sent))

        consumer = broker.consumer(topic)
        msgs = consume(consumer, len(sent))
        extra = list(drain_extra(consumer, 1.0))
        consumer.close()
        assert not extra
        by_key = {m.key().decode(): m for m in msgs}
        assert set(by_key) == set(sent)
        for cid, (version, payload) in sent.items():
            m = by_key[cid]
            value = m.value()
            assert value[:4] == b"HEP3"  # v1/v2 converted to v3
            assert int.from_bytes(value[4:6], "big") == len(value)
            assert payload in value
            h = _headers(m)
            assert h["hep.version"] == str(version).encode()
            assert h["hep.node"] == b"test-node"
            assert h["hep.sender"].startswith(b"127.0.0.1:")
            assert abs(int(h["hep.received_us"]) / 1e6 - time.time()) < 120
        _ts_type, ts = by_key[next(c for c in sent if c.startswith("udp-v3-"))].timestamp()
        assert ts == 1700000100005  # HEP capture time, in ms
        assert col.metric("hepwatch_collector_decoded_packets_total", version="1") == 1
        assert col.metric("hepwatch_collector_decoded_packets_total", version="2") == 1
        status, _ = col.http("/readyz")
        assert status == 200
    finally:
        assert col.stop() == 0


def test_malformed_and_unauthenticated_are_counted_and_absent(
    tmp_path: Path, broker: TansuBroker
) -> None:
    topic = _topic()
    broker.create_topic(topic)
    col = CollectorProcess(
        tmp_path, broker.bootstrap, topic, extra_toml='[auth]\nkeys = { "2001" = "s3cret" }\n'
    )
    col.start()
    try:
        good = f"good-{uuid.uuid4().hex[:6]}@t"
        good_pkt = hep3(sip_message(good), auth_key=b"s3cret")
        bad = [
            b"",  # empty datagram
            b"HEP3\x00\x05",  # length below 6
            b"XXXX\x00\x20" + b"\x00" * 26,  # bad magic
            good_pkt[:-10],  # truncated
            hep3(sip_message("nokey@t")),  # no key
            hep3(sip_message("wrongkey@t"), auth_key=b"guess"),  # wrong key
            hep3(b"this is not sip at all", auth_key=b"s3cret"),  # not SIP
        ]
        _send_udp(col.udp_port, [*bad, good_pkt])
        col.wait_metric("hepwatch_collector_received_packets_total", len(bad) + 1)
        assert col.metric("hepwatch_collector_rejected_packets_total", reason="auth") == 2
        assert col.metric("hepwatch_collector_rejected_packets_total", reason="not_sip") == 1
        assert col.metric("hepwatch_collector_rejected_packets_total") == len(bad)
        assert col.metric("hepwatch_collector_accepted_packets_total") == 1
        consumer = broker.consumer(topic)
        msgs = consume(consumer, 1) + list(drain_extra(consumer, 2.0))
        consumer.close()
        assert [m.key().decode() for m in msgs] == [good]
        assert b"s3cret" not in msgs[0].value()  # the secret is never forwarded
        # A TCP stream that loses framing is closed and counted.
        with socket.create_connection(("127.0.0.1", col.tcp_port)) as s:
            s.sendall(b"GARBAGE-NOT-HEP")
            s.settimeout(5)
            assert s.recv(10) == b""
        assert (
            col.wait_metric("hepwatch_collector_rejected_packets_total", len(bad) + 1)
            == len(bad) + 1
        )
    finally:
        col.stop()
    assert "s3cret" not in col.log.read_text()


def test_broker_outage_loses_nothing_and_doubles_nothing(
    tmp_path: Path, own_broker: TansuBroker
) -> None:
    topic = _topic()
    own_broker.create_topic(topic)
    col = CollectorProcess(tmp_path, own_broker.bootstrap, topic, message_timeout_ms=2000)
    col.start()
    sent: list[str] = []
    running = threading.Event()
    running.set()
    done = threading.Event()

    def sender() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            i = 0
            while not done.is_set():
                running.wait()
                key = f"outage-{i:06d}-{uuid.uuid4().hex[:4]}@t"
                s.sendto(hep3(sip_message(key)), ("127.0.0.1", col.udp_port))
                sent.append(key)
                i += 1
                time.sleep(0.002)

    t = threading.Thread(target=sender)
    try:
        consumer = own_broker.consumer(topic)
        t.start()
        got_before = [m.key().decode() for m in consume(consumer, 10**9, 6)]
        # Pause the stream for a moment so that what the broker holds is exactly what was
        # acknowledged, read all of it, then stop the broker and resume the stream.
        running.clear()
        time.sleep(0.3)
        acked = col.wait_metric("hepwatch_collector_acknowledged_total", len(sent))
        assert acked == len(sent)
        got_before += [m.key().decode() for m in consume(consumer, len(sent) - len(got_before))]
        assert len(got_before) == len(sent)
        consumer.close()
        own_broker.stop()
        running.set()
        time.sleep(4)  # several seconds without a broker while packets keep coming
        assert col.metric("hepwatch_collector_spooling") == 1
        assert col.metric("hepwatch_collector_spool_depth_records") > 0
        own_broker.start()
        own_broker.create_topic(topic)
        time.sleep(3)  # and the stream goes on while the spool drains
        done.set()
        t.join()
        col.wait_metric("hepwatch_collector_accepted_packets_total", len(sent))
        consumer = own_broker.consumer(topic)
        got_after = [m.key().decode() for m in consume(consumer, len(sent) - len(got_before), 60)]
        got_after += [m.key().decode() for m in drain_extra(consumer, 2.0)]
        consumer.close()
        assert col.metric("hepwatch_collector_spooled_total") > 0
        assert col.metric("hepwatch_collector_spool_drained_total") > 0
    finally:
        done.set()
        running.set()
        if t.is_alive():
            t.join()
        col.stop()
    combined = got_before + got_after
    assert len(set(combined)) == len(sent), f"missing {len(set(sent) - set(combined))}"
    assert len(combined) == len(sent), f"{len(combined) - len(sent)} duplicates"


def test_restarted_collector_delivers_a_non_empty_spool(tmp_path: Path) -> None:
    broker = TansuBroker()  # not started yet: the first collector cannot reach it
    topic = _topic()
    col = CollectorProcess(tmp_path, broker.bootstrap, topic, message_timeout_ms=1000)
    col.start()
    keys = [f"spooled-{i}-{uuid.uuid4().hex[:4]}@t" for i in range(500)]
    try:
        _send_tcp(col.tcp_port, b"".join(hep3(sip_message(k)) for k in keys))
        col.wait_metric("hepwatch_collector_spool_depth_records", len(keys), timeout=30)
        assert col.metric("hepwatch_collector_spool_depth_records") == len(keys)
    finally:
        assert col.stop() == 0
    assert any((tmp_path / "spool").iterdir())
    broker.start()
    try:
        broker.create_topic(topic)
        col2 = CollectorProcess(tmp_path, broker.bootstrap, topic)
        col2.start()
        try:
            consumer = broker.consumer(topic)
            got = [m.key().decode() for m in consume(consumer, len(keys), 60)]
            got += [m.key().decode() for m in drain_extra(consumer, 1.0)]
            consumer.close()
            assert sorted(got) == sorted(keys)
            assert col2.wait_metric("hepwatch_collector_spool_drained_total", len(keys)) == len(
                keys
            )
            assert col2.metric("hepwatch_collector_spool_depth_records") == 0
        finally:
            col2.stop()
    finally:
        broker.stop()


def test_sigterm_flushes_everything_accepted(tmp_path: Path, broker: TansuBroker) -> None:
    topic = _topic()
    broker.create_topic(topic)
    col = CollectorProcess(tmp_path, broker.bootstrap, topic)
    col.start()
    keys = [f"flush-{i}-{uuid.uuid4().hex[:4]}@t" for i in range(5000)]
    _send_tcp(col.tcp_port, b"".join(hep3(sip_message(k)) for k in keys))
    assert col.stop() == 0  # right away: the collector must flush before exiting
    consumer = broker.consumer(topic)
    got = [m.key().decode() for m in consume(consumer, len(keys), 60)]
    consumer.close()
    assert sorted(got) == sorted(keys)

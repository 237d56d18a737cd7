"""End-to-end kit: real Kamailio and real SIPp producing HEP captures.

This module owns running the project's own proxy (`deploy/kamailio/kamailio.cfg`) and the
SIPp scenario pairs under `tests/e2e/scenarios/`, and catching what Kamailio's siptrace mirrors:

- `KamailioProxy`: starts `kamailio -DD -E` in a temporary runtime directory, in a session of
  its own (Kamailio signals its whole process group when it stops), mirroring HEPv3 to a given
  host:port; stops it by pid and waits for its workers.
- `HepSink`: a UDP socket on a free port, read by a thread, keeping (receive time, bytes) per
  datagram; writes what it caught as a pcap (Ethernet/IPv4/UDP frames to the sink's port).
- `run_scenario(name, proxy)`: the scenario's UAS in the background, its UAC in the foreground,
  both bounded; returns the Call-IDs, exit codes and SIPp's message logs, or raises
  `ScenarioError` with SIPp's error logs.
- `run_and_capture(name, sink, proxy)`: a run plus the datagrams it produced (`Capture`, which
  also writes them as a pcap); `running_kit()`: a sink and a started proxy, as a context.
- `skip_reason()`: why the kit cannot run here (no kamailio, no sipp, ports busy), else None.

Ports default to 15060 (proxy), 15070 (UAS) and 15080 (UAC), clear of the shared testbed's
5060/5070/5080. Every scenario NAME has `NAME_uac.xml`, `NAME_uas.xml` and `NAME.anomalies`
(the anomalies the analyzer must report, one line per occurrence). A UAC scenario may say
`<!-- hepwatch-e2e: timeout=SECONDS -->` when it needs longer than the default bound.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import dpkt

E2E_DIR = Path(__file__).resolve().parent
SCENARIO_DIR = E2E_DIR / "scenarios"
PROJECT_DIR = E2E_DIR.parents[1]
KAMAILIO_CFG = PROJECT_DIR / "deploy" / "kamailio" / "kamailio.cfg"

LOOPBACK = "127.0.0.1"
PROXY_PORT = 15060
UAS_PORT = 15070
UAC_PORT = 15080
CAPTURE_ID = 2001
DEFAULT_SCENARIO_TIMEOUT_S = 30.0

_TIMEOUT_MARK = re.compile(r"hepwatch-e2e:\s*timeout=(\d+)")


# --- environment ---------------------------------------------------------------------------------


def kamailio_binary() -> str | None:
    return shutil.which("kamailio") or (
        "/usr/sbin/kamailio" if os.access("/usr/sbin/kamailio", os.X_OK) else None
    )


def sipp_binary() -> str | None:
    return shutil.which("sipp")


def udp_port_free(port: int, host: str = LOOPBACK) -> bool:
    """True when nothing is bound to udp host:port (a bind without SO_REUSEADDR succeeds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def skip_reason(
    ports: tuple[int, ...] = (PROXY_PORT, UAS_PORT, UAC_PORT), host: str = LOOPBACK
) -> str | None:
    """Why the kit cannot run on this machine, or None when it can."""
    if kamailio_binary() is None:
        return "kamailio is not installed (Debian package kamailio; make test installs it as root)"
    if sipp_binary() is None:
        return "sipp is not installed (Debian package sip-tester; make test installs it as root)"
    if not KAMAILIO_CFG.is_file():
        return f"{KAMAILIO_CFG} is missing"
    busy = [str(p) for p in ports if not udp_port_free(p, host)]
    if busy:
        return f"udp {host} port(s) {', '.join(busy)} busy (another Kamailio, SIPp or kit run?)"
    return None


def _wait(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is dead for our purposes
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def group_members(pgid: int) -> list[int]:
    """Pids whose process group is `pgid` (Kamailio's workers share the main process's)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


# --- HEP sink ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HepDatagram:
    """One datagram the sink received: when (wall clock, seconds), from where, what."""

    received: float
    sender: tuple[str, int]
    data: bytes


class HepSink:
    """Receives HEP over UDP on a free port (or the given one) in a background thread."""

    def __init__(self, host: str = LOOPBACK, port: int = 0) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with contextlib.suppress(OSError):
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self._sock.bind((host, port))
        self._sock.settimeout(0.1)
        self.host, self.port = self._sock.getsockname()[:2]
        self._lock = threading.Lock()
        self._got: list[HepDatagram] = []
        self._last = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"hep-sink-{self.port}", daemon=True)
        self._thread.start()

    @property
    def uri(self) -> str:
        """The sink as a Kamailio siptrace duplicate_uri."""
        return f"sip:{self.host}:{self.port}"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            now = time.time()
            with self._lock:
                self._got.append(HepDatagram(now, (addr[0], addr[1]), data))
                self._last = time.monotonic()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()

    def __enter__(self) -> HepSink:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __len__(self) -> int:
        with self._lock:
            return len(self._got)

    def datagrams(self, since: int = 0) -> list[HepDatagram]:
        """What arrived, in arrival order; `since` is a count from an earlier `len(sink)`."""
        with self._lock:
            return self._got[since:]

    def packets(self, since: int = 0) -> list[tuple[float, bytes]]:
        """(receive time, HEP bytes) per datagram, the shape `iter_hep_packets` yields."""
        return [(d.received, d.data) for d in self.datagrams(since)]

    def wait_quiet(self, quiet: float = 0.5, timeout: float = 10.0) -> bool:
        """Wait until nothing arrived for `quiet` seconds; False if `timeout` passed first."""

        def calm() -> bool:
            with self._lock:
                last = self._last
            return time.monotonic() - last >= quiet

        return _wait(calm, timeout, 0.05)

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until at least `count` datagrams arrived in all."""
        return _wait(lambda: len(self) >= count, timeout, 0.02)

    def write_pcap(self, path: str | Path, since: int = 0) -> Path:
        """The datagrams as Ethernet/IPv4/UDP frames (sender -> sink), stamped with receive time."""
        return write_pcap(path, self.datagrams(since), (self.host, self.port))


def write_pcap(path: str | Path, datagrams: list[HepDatagram], sink: tuple[str, int]) -> Path:
    """A classic pcap (microsecond stamps, Ethernet link type) holding `datagrams`."""
    path = Path(path)
    dst_ip = socket.inet_aton(sink[0])
    with path.open("wb") as f:
        writer = dpkt.pcap.Writer(f, snaplen=65535, linktype=dpkt.pcap.DLT_EN10MB)
        for n, d in enumerate(datagrams):
            udp = dpkt.udp.UDP(sport=d.sender[1], dport=sink[1], data=d.data)
            udp.ulen = len(udp)
            ip = dpkt.ip.IP(
                src=socket.inet_aton(d.sender[0]),
                dst=dst_ip,
                p=dpkt.ip.IP_PROTO_UDP,
                ttl=64,
                id=n & 0xFFFF,
                data=udp,
            )
            ip.len = len(ip)
            eth = dpkt.ethernet.Ethernet(
                src=b"\x02\x00\x00\x00\x00\x01",
                dst=b"\x02\x00\x00\x00\x00\x02",
                type=dpkt.ethernet.ETH_TYPE_IP,
                data=ip,
            )
            writer.writepkt(bytes(eth), ts=d.received)
    return path


# --- Kamailio ------------------------------------------------------------------------------------


class KamailioError(RuntimeError):
    pass


class KamailioProxy:
    """The project's Kamailio config, started with `-DD -E` and stopped by pid."""

    def __init__(
        self,
        hep_host: str,
        hep_port: int,
        *,
        workdir: str | Path | None = None,
        listen_ip: str = LOOPBACK,
        port: int = PROXY_PORT,
        uas: tuple[str, int] = (LOOPBACK, UAS_PORT),
        uac: tuple[str, int] = (LOOPBACK, UAC_PORT),
        capture_id: int = CAPTURE_ID,
        hep_transport: str = "udp",
        auth_key: str | None = None,
        workers: int = 1,
        log_level: int = 2,
        cfg: str | Path = KAMAILIO_CFG,
    ) -> None:
        self.listen_ip = listen_ip
        self.port = port
        self.uas = uas
        self.uac = uac
        self.capture_id = capture_id
        self.hep_uri = f"sip:{hep_host}:{hep_port}" + (
            ";transport=tcp" if hep_transport == "tcp" else ""
        )
        self.cfg = Path(cfg)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="hepwatch-kam-")
            workdir = self._tmp.name
        self.workdir = Path(workdir)
        self.runtime_dir = self.workdir / "run"
        self.pid_file = self.workdir / "kamailio.pid"
        self.log_path = self.workdir / "kamailio.log"
        defs = {
            "LISTEN_IP": listen_ip,
            "LISTEN_PORT": str(port),
            "UAS_PORT": str(uas[1]),
            "UAS_URI": f'"sip:{uas[0]}:{uas[1]}"',
            "UAC_URI": f'"sip:{uac[0]}:{uac[1]}"',
            "HEP_URI": f'"{self.hep_uri}"',
            "HEP_CAPTURE_ID": str(capture_id),
            "UDP_WORKERS": str(workers),
            "LOG_LEVEL": str(log_level),
        }
        if auth_key is not None:
            defs["HEP_AUTH_KEY"] = f'"{auth_key}"'
        self.defines = defs
        self._args = [a for k, v in defs.items() for a in ("-A", f"{k}={v}")]
        if hep_transport == "tcp":
            self._args += ["-A", "WITH_TCP"]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return (self.listen_ip, self.port)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def check_config(self) -> None:
        """`kamailio -c` with the same defines; raises KamailioError with its output."""
        binary = kamailio_binary()
        if binary is None:
            raise KamailioError("kamailio is not installed")
        res = subprocess.run(
            [binary, "-c", "-f", str(self.cfg), *self._args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if res.returncode != 0:
            raise KamailioError(f"kamailio -c failed:\n{res.stdout}\n{res.stderr}"[-4000:])

    def start(self, timeout: float = 15.0) -> None:
        binary = kamailio_binary()
        if binary is None:
            raise KamailioError("kamailio is not installed")
        if self.proc is not None:
            raise KamailioError("already started")
        if not udp_port_free(self.port, self.listen_ip):
            raise KamailioError(f"udp {self.listen_ip}:{self.port} is busy")
        self.check_config()
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        self.pid_file.unlink(missing_ok=True)
        cmd = [
            binary,
            "-f",
            str(self.cfg),
            *self._args,
            "-DD",
            "-E",
            "-Y",
            str(self.runtime_dir),
            "-P",
            str(self.pid_file),
            "-m",
            "32",
            "-M",
            "8",
        ]
        with self.log_path.open("ab") as log:
            # A session of its own: Kamailio signals its whole process group on shutdown.
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                return True
            return self.pid_file.is_file() and not udp_port_free(self.port, self.listen_ip)

        if not _wait(up, timeout) or self.proc.poll() is not None:
            tail = self.log_tail()
            self.stop()
            raise KamailioError(f"kamailio did not come up:\n{tail}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the main process, then SIGKILL to whatever of its group is left."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        pgid = proc.pid
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        # the workers go with the main process; give them a moment, then make sure
        if not _wait(lambda: not group_members(pgid), 5.0):
            for pid in group_members(pgid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _wait(lambda: not group_members(pgid), 5.0)

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> KamailioProxy:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# --- SIPp scenarios ------------------------------------------------------------------------------


class ScenarioError(RuntimeError):
    pass


@dataclass(frozen=True)
class SippMessage:
    """One SIP message a SIPp side logged: `sent` by that side or received by it."""

    side: str  # "uac" or "uas"
    sent: bool
    data: bytes

    @property
    def first_line(self) -> str:
        return self.data.split(b"\r\n", 1)[0].decode("latin-1")

    @property
    def call_id(self) -> str | None:
        m = re.search(rb"^(?:Call-ID|i)[ \t]*:[ \t]*(\S+)", self.data, re.M | re.I)
        return m.group(1).decode("latin-1") if m else None


@dataclass
class ScenarioResult:
    name: str
    call_ids: list[str]
    uac_rc: int
    uas_rc: int
    run_dir: Path
    uac_messages: Path
    uas_messages: Path
    started: float  # wall clock, seconds
    elapsed: float
    ports: dict[str, int] = field(default_factory=dict)  # "proxy", "uas", "uac"

    def messages(self) -> list[SippMessage]:
        """Every message both SIPp sides logged as sent or received, UAC first."""
        return parse_sipp_log(self.uac_messages, "uac") + parse_sipp_log(self.uas_messages, "uas")


_LOG_HEAD = re.compile(
    rb"^-{10,} [^\n]*\n(?P<what>UDP|TCP|TLS|SCTP)? ?message (?P<dir>sent|received)"
    rb"[^\n]*:\n\n",
    re.M,
)


def parse_sipp_log(path: str | Path, side: str) -> list[SippMessage]:
    """The messages of a SIPp `-trace_msg` file, as they went on the wire (CRLF line ends)."""
    try:
        text = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    heads = list(_LOG_HEAD.finditer(text))
    out = []
    for i, m in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        chunk = text[m.end() : end]
        out.append(SippMessage(side, m.group("dir") == b"sent", _sipp_logged_bytes(chunk)))
    return out


def _sipp_logged_bytes(chunk: bytes) -> bytes:
    """SIPp writes the message then a blank line; unexpected-message notes follow it."""
    chunk = re.split(rb"\n-{10,}", chunk, maxsplit=1)[0]
    if chunk.endswith(b"\n\n"):
        chunk = chunk[:-1]
    return chunk


def scenario_names() -> list[str]:
    """Every scenario with both XML files, sorted."""
    return sorted(
        p.name[: -len("_uac.xml")]
        for p in SCENARIO_DIR.glob("*_uac.xml")
        if (SCENARIO_DIR / p.name.replace("_uac.xml", "_uas.xml")).is_file()
    )


def expected_anomalies(name: str) -> Counter[str]:
    """The anomalies scenario `name` must yield: one line per occurrence, `#` comments."""
    out: Counter[str] = Counter()
    for line in (SCENARIO_DIR / f"{name}.anomalies").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out[line] += 1
    return out


def scenario_timeout(name: str, scenario_dir: str | Path = SCENARIO_DIR) -> float:
    """The bound for one run: the UAC's `hepwatch-e2e: timeout=` mark, else the default."""
    head = (Path(scenario_dir) / f"{name}_uac.xml").read_text()[:2000]
    m = _TIMEOUT_MARK.search(head)
    return float(m.group(1)) if m else DEFAULT_SCENARIO_TIMEOUT_S


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(none)"


def _stop_process(proc: subprocess.Popen[bytes], grace: float = 3.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=5)


def run_scenario(
    name: str,
    proxy: KamailioProxy,
    *,
    run_dir: str | Path | None = None,
    timeout: float | None = None,
    scenario_dir: str | Path = SCENARIO_DIR,
    extra_args: tuple[str, ...] = (),
) -> ScenarioResult:
    """Run scenario `name` through `proxy`: UAS in the background, UAC in the foreground.

    Both SIPp processes are bounded by `-timeout` and by a subprocess timeout (`timeout`,
    default `scenario_timeout(name)`). The UAC's Call-ID is `e2e-NAME-<hex>-<call
    number>@<ip>`. SIPp's logs go to `run_dir` (a new temporary folder, left for inspection,
    when None). Raises ScenarioError, with SIPp's error logs, unless both sides complete the
    call.
    """
    sipp = sipp_binary()
    if sipp is None:
        raise ScenarioError("sipp is not installed")
    scenario_dir = Path(scenario_dir)
    uac_xml = scenario_dir / f"{name}_uac.xml"
    uas_xml = scenario_dir / f"{name}_uas.xml"
    if not (uac_xml.is_file() and uas_xml.is_file()):
        raise ScenarioError(f"no scenario {name!r} in {scenario_dir}")
    limit = timeout if timeout is not None else scenario_timeout(name, scenario_dir)
    uas_ip, uas_port = proxy.uas
    uac_ip, uac_port = proxy.uac
    for host, port in ((uas_ip, uas_port), (uac_ip, uac_port)):
        if not udp_port_free(port, host):
            raise ScenarioError(f"udp {host}:{port} is busy")
    tag = uuid.uuid4().hex[:12]
    out = Path(run_dir) if run_dir is not None else Path(tempfile.mkdtemp(prefix=f"e2e-{name}-"))
    out.mkdir(parents=True, exist_ok=True)
    files = {
        f"{side}_{kind}": out / f"{side}_{kind}.log"
        for side in ("uac", "uas")
        for kind in ("messages", "errors", "stdout")
    }
    for f in files.values():
        f.unlink(missing_ok=True)
    common = [
        "-m",
        "1",
        "-nostdin",
        "-timeout",
        f"{int(limit)}s",
        "-timeout_error",
        "-trace_msg",
        "-trace_err",
        *extra_args,
    ]
    started = time.time()
    t0 = time.monotonic()
    with files["uas_stdout"].open("wb") as uas_out:
        uas = subprocess.Popen(
            [
                sipp,
                "-sf",
                str(uas_xml),
                *common,
                "-i",
                uas_ip,
                "-p",
                str(uas_port),
                "-message_file",
                str(files["uas_messages"]),
                "-error_file",
                str(files["uas_errors"]),
            ],
            cwd=out,
            stdin=subprocess.DEVNULL,
            stdout=uas_out,
            stderr=subprocess.STDOUT,
        )
    try:
        if not _wait(lambda: not udp_port_free(uas_port, uas_ip) or uas.poll() is not None, 10):
            raise ScenarioError(f"{name}: sipp UAS did not bind {uas_ip}:{uas_port}")
        if uas.poll() is not None:
            raise ScenarioError(
                f"{name}: sipp UAS exited with {uas.returncode}:\n{_tail(files['uas_stdout'])}"
            )
        with files["uac_stdout"].open("wb") as uac_out:
            try:
                uac = subprocess.run(
                    [
                        sipp,
                        "-sf",
                        str(uac_xml),
                        f"{proxy.listen_ip}:{proxy.port}",
                        *common,
                        "-i",
                        uac_ip,
                        "-p",
                        str(uac_port),
                        "-cid_str",
                        f"e2e-{name}-{tag}-%u@%s",
                        "-message_file",
                        str(files["uac_messages"]),
                        "-error_file",
                        str(files["uac_errors"]),
                    ],
                    cwd=out,
                    stdin=subprocess.DEVNULL,
                    stdout=uac_out,
                    stderr=subprocess.STDOUT,
                    timeout=limit + 10,
                )
                uac_rc = uac.returncode
            except subprocess.TimeoutExpired:
                uac_rc = 124
        # the UAS ends by itself once its side of the call is over; after a failed UAC it
        # may wait for messages that never come, so its grace is short then
        grace = 3.0 if uac_rc != 0 else max(5.0, limit + 5 - (time.monotonic() - t0))
        try:
            uas_rc = uas.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _stop_process(uas)
            uas_rc = 124
    finally:
        _stop_process(uas)
    elapsed = time.monotonic() - t0
    result = ScenarioResult(
        name=name,
        call_ids=[],
        uac_rc=uac_rc,
        uas_rc=uas_rc,
        run_dir=out,
        uac_messages=files["uac_messages"],
        uas_messages=files["uas_messages"],
        started=started,
        elapsed=elapsed,
        ports={"proxy": proxy.port, "uas": uas_port, "uac": uac_port},
    )
    ids = [m.call_id for m in parse_sipp_log(files["uac_messages"], "uac") if m.sent]
    result.call_ids = list(dict.fromkeys(i for i in ids if i))
    if uac_rc != 0 or uas_rc != 0:
        raise ScenarioError(
            f"{name}: sipp UAC exit {uac_rc}, UAS exit {uas_rc} (run dir {out})\n"
            f"--- UAC errors:\n{_tail(files['uac_errors'])}\n"
            f"--- UAS errors:\n{_tail(files['uas_errors'])}\n"
            f"--- UAC stdout:\n{_tail(files['uac_stdout'], 1500)}\n"
            f"--- UAS stdout:\n{_tail(files['uas_stdout'], 1500)}"
        )
    return result


@dataclass
class Capture:
    """One scenario run and the HEP it produced."""

    result: ScenarioResult
    datagrams: list[HepDatagram]
    sink: tuple[str, int]

    def packets(self) -> list[tuple[float, bytes]]:
        """(receive time, HEP bytes), as `collector.replay.iter_hep_packets` yields them."""
        return [(d.received, d.data) for d in self.datagrams]

    def write_pcap(self, path: str | Path) -> Path:
        return write_pcap(path, self.datagrams, self.sink)


def run_and_capture(
    name: str,
    sink: HepSink,
    proxy: KamailioProxy,
    *,
    run_dir: str | Path | None = None,
    quiet: float = 0.5,
    timeout: float | None = None,
) -> Capture:
    """`run_scenario`, then wait until the mirror is quiet; the datagrams of that run only."""
    mark = len(sink)
    result = run_scenario(name, proxy, run_dir=run_dir, timeout=timeout)
    sink.wait_quiet(quiet, timeout=10)
    return Capture(result, sink.datagrams(mark), (sink.host, sink.port))


@contextlib.contextmanager
def running_kit(
    workdir: str | Path | None = None,
    *,
    port: int = PROXY_PORT,
    capture_id: int = CAPTURE_ID,
    auth_key: str | None = None,
    workers: int = 1,
) -> Iterator[tuple[HepSink, KamailioProxy]]:
    """A HepSink and the project's Kamailio mirroring to it; both stopped on exit.

    Check `skip_reason()` first.
    """
    with HepSink() as sink:
        proxy = KamailioProxy(
            sink.host,
            sink.port,
            workdir=workdir,
            port=port,
            capture_id=capture_id,
            auth_key=auth_key,
            workers=workers,
        )
        try:
            proxy.start()
            yield sink, proxy
        finally:
            proxy.close()


__all__ = [
    "CAPTURE_ID",
    "KAMAILIO_CFG",
    "PROXY_PORT",
    "SCENARIO_DIR",
    "UAC_PORT",
    "UAS_PORT",
    "Capture",
    "HepDatagram",
    "HepSink",
    "KamailioError",
    "KamailioProxy",
    "ScenarioError",
    "ScenarioResult",
    "SippMessage",
    "expected_anomalies",
    "group_members",
    "parse_sipp_log",
    "run_and_capture",
    "run_scenario",
    "running_kit",
    "scenario_names",
    "scenario_timeout",
    "skip_reason",
    "udp_port_free",
    "write_pcap",
]

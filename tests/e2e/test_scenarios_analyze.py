"""Every end-to-end scenario, through real Kamailio and SIPp, yields exactly its anomalies.

Each scenario of `tests/e2e/scenarios/` runs through the project's Kamailio; the HEP mirror
is written as a pcap and analyzed like `hepwatch analyze` does (`consumers.analyze`). The
anomalies found must equal the scenario's `.anomalies` list, by name and count: the clean
flows (basic call, hold and resume, UPDATE refresh, honoured session timers, correct glare
retries) yield none. Every call also ends with one dialog record.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e.harness import (
    HepSink,
    KamailioProxy,
    expected_anomalies,
    run_and_capture,
    running_kit,
    scenario_names,
    skip_reason,
)

from consumers.analyze import analyze

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HepSink, KamailioProxy]]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with running_kit(tmp_path_factory.mktemp("kamailio")) as pair:
        yield pair


@pytest.mark.parametrize("name", scenario_names())
def test_scenario_yields_exactly_its_anomalies(
    name: str, kit: tuple[HepSink, KamailioProxy], tmp_path: Path
) -> None:
    sink, proxy = kit
    capture = run_and_capture(name, sink, proxy, run_dir=tmp_path / "run")
    pcap = capture.write_pcap(tmp_path / f"{name}.pcap")
    result = analyze(pcap)
    found = Counter(a.anomaly for a in result.anomalies)
    details = [
        (a.anomaly, a.severity, a.method, a.cseq, a.status, a.fields) for a in result.anomalies
    ]
    assert found == expected_anomalies(name), details
    call_ids = {d.call_id for d in result.dialogs}
    assert call_ids == set(capture.result.call_ids)

"""Per-agent keys and source allowlists (PROTOCOL.md A.10)."""

from __future__ import annotations

from collector.auth import AuthPolicy


def test_no_configuration_allows_everything() -> None:
    policy = AuthPolicy({}, [])
    assert not policy.requires_key and not policy.restricts_sources
    assert policy.key_valid(1, None)
    assert policy.source_allowed("203.0.113.9")


def test_per_capture_id_key_and_default_key() -> None:
    policy = AuthPolicy({"2001": "alpha", "*": "beta"})
    assert policy.key_valid(2001, b"alpha")
    assert not policy.key_valid(2001, b"beta")  # its own key replaces the default
    assert policy.key_valid(7, b"beta")
    assert not policy.key_valid(7, None)
    assert not policy.key_valid(2001, b"alph")
    assert not policy.key_valid(2001, b"")


def test_key_only_for_one_agent_rejects_others() -> None:
    policy = AuthPolicy({"2001": "alpha"})
    assert not policy.key_valid(9, b"alpha")


def test_cidr_allowlist_v4_v6_and_mapped() -> None:
    policy = AuthPolicy({}, ["10.0.0.0/8", "2001:db8::/32"])
    assert policy.source_allowed("10.1.2.3")
    assert policy.source_allowed("::ffff:10.1.2.3")
    assert policy.source_allowed("2001:db8::5")
    assert not policy.source_allowed("192.0.2.1")
    assert not policy.source_allowed("not-an-address")
    assert policy.source_allowed("10.1.2.3")  # cached path

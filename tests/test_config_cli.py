"""Configuration precedence (flags > environment > file > defaults) and the command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hepwatch.cli import cli
from hepwatch.config import ListenAddress, load_settings


def test_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "h.toml"
    cfg.write_text('[kafka]\ntopic = "file-topic"\nbootstrap = "file:1"\n[spool]\ndir = "/s"\n')
    monkeypatch.setenv("HEPWATCH_KAFKA__BOOTSTRAP", "env:2")
    s = load_settings(cfg, {"kafka": {"topic": "flag-topic"}})
    assert s.kafka.topic == "flag-topic"
    assert s.kafka.bootstrap == "env:2"
    assert str(s.spool.dir) == "/s"
    assert s.kafka.compression == "lz4"


def test_bad_values_are_clear_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "h.toml"
    cfg.write_text('[collector]\nlisten = ["sctp://0.0.0.0:9060"]\n')
    with pytest.raises(ValueError, match="scheme must be one of"):
        load_settings(cfg)
    cfg.write_text("[kafka]\nbootstrapp = 'typo'\n")
    with pytest.raises(ValueError, match="bootstrapp"):
        load_settings(cfg)
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "missing.toml")


def test_listen_address_parsing() -> None:
    a = ListenAddress.parse("tls://[::1]:9061")
    assert (a.scheme, a.host, a.port) == ("tls", "::1", 9061)
    with pytest.raises(ValueError):
        ListenAddress.parse("udp://host")


def test_help_lists_commands_and_collect_flags() -> None:
    runner = CliRunner()
    out = runner.invoke(cli, ["--help"]).output
    for cmd in ("collect", "replay", "config"):
        assert cmd in out
    out = runner.invoke(cli, ["collect", "--help"]).output
    for flag in ("--listen", "--kafka", "--topic", "--spool-dir", "--metrics"):
        assert flag in out


def test_config_command_masks_keys(tmp_path: Path) -> None:
    cfg = tmp_path / "h.toml"
    cfg.write_text('[auth]\nkeys = { "2001" = "topsecret" }\n')
    result = CliRunner().invoke(cli, ["--config", str(cfg), "config"])
    assert result.exit_code == 0, result.output
    assert "topsecret" not in result.output and '"2001": "***"' in result.output


def test_bad_config_exits_nonzero_with_message(tmp_path: Path) -> None:
    cfg = tmp_path / "h.toml"
    cfg.write_text("[kafka]\nlinger_ms = -3\n")
    result = CliRunner().invoke(cli, ["--config", str(cfg), "config"])
    assert result.exit_code != 0 and "linger_ms" in result.output


def test_console_script_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "hepwatch.cli", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "hepwatch" in out.stdout


def test_shipped_example_config_loads_and_matches_defaults() -> None:
    from hepwatch.config import Settings

    example = Path(__file__).resolve().parents[1] / "deploy" / "hepwatch.toml"
    loaded = load_settings(example)
    defaults = Settings()
    for section in ("kafka", "spool", "metrics", "clickhouse", "run", "query_http", "alerts"):
        assert getattr(loaded, section) == getattr(defaults, section), section
    assert loaded.collector.listen == defaults.collector.listen

"""`hepwatch` start-up: heavy dependencies load only for the commands that need them, and
`analyze` without any configuration uses the same values as the settings model."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hepwatch import cli as cli_mod

HEAVY = ("pydantic", "pydantic_settings", "clickhouse_connect", "confluent_kafka", "chdb")


def test_importing_the_cli_loads_no_heavy_dependency() -> None:
    code = (
        "import sys, hepwatch.cli\n"
        f"heavy = [m for m in sys.modules if m.split('.')[0] in {HEAVY!r}]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_analyze_defaults_equal_the_settings_model(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("HEPWATCH_"):
            monkeypatch.delenv(name)
    from hepwatch.config import load_settings

    settings = load_settings(None)
    for name, value in cli_mod.ANALYZE_DEFAULTS.items():
        assert getattr(settings.consumer, name) == value, name
    assert settings.log.level == cli_mod.LOG_LEVEL_DEFAULT


def test_lazy_commands_are_listed_and_resolved() -> None:
    import click

    ctx = click.Context(cli_mod.cli)
    names = cli_mod.cli.list_commands(ctx)
    for name in ("analyze", "sql", "legs", "schema"):
        assert name in names
        command = cli_mod.cli.get_command(ctx, name)
        assert command is not None and command.name == name

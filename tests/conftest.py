"""Shared fixtures: drive the real CLI with Typer's CliRunner at a pinned terminal width."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vitcli.cli import app

DATA = Path(__file__).parent / "data"
GOLDEN = Path(__file__).parent / "golden"


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


def run_cli(*args: str, env: dict | None = None) -> Run:
    """Invoke `vitcli ARGS` in-process; stdout and stderr apart; COLUMNS=100 as in the golden files."""
    runner = CliRunner()
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "100", **(env or {})})
    return Run(result.exit_code, result.stdout, result.stderr)


@pytest.fixture
def cli():
    return run_cli


def check_golden(name: str, text: str) -> None:
    """Compare with tests/golden/NAME; VITCLI_UPDATE_GOLDEN=1 rewrites it."""
    path = GOLDEN / name
    if os.environ.get("VITCLI_UPDATE_GOLDEN") == "1" or not path.exists():
        path.write_text(text)
    assert text == path.read_text()

"""The house rules a linter can check (pyproject.toml [tool.ruff]): torch and timm only in backend/, nothing heavy
imported at module level where a light command could load it, and pyflakes/pycodestyle errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_is_clean():
    p = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


def test_the_rules_catch_a_torch_import_outside_backend():
    """The rules are live: a module-level torch import under commands/ is reported."""
    probe = ROOT / "src" / "vitcli" / "commands" / "_lint_probe.py"
    probe.write_text("import torch\n\nprint(torch)\n")
    try:
        p = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise",
                            str(probe)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        probe.unlink()
    assert "TID251" in p.stdout and "TID253" in p.stdout

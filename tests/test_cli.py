"""The CLI's edges: light commands import no torch, help texts, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "timm", "numpy", "PIL", "torchvision")

PROBE = """
import atexit, sys
atexit.register(lambda: print("HEAVY=" + ",".join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr))
sys.argv = ["vitcli", *{args!r}]
from vitcli.cli import main
main()
"""


def _run_python(args: list[str]) -> subprocess.CompletedProcess:
    code = PROBE.format(heavy=HEAVY, args=args)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["tokens", "--size", "384", "--patch", "16"],
        ["tokens", "--model", "vit_large_patch14_reg4_dinov2.lvd142m", "--json"],
        ["variants", "--json"],
        ["cost", "--variant", "L/14", "--size", "224", "--size", "448"],
        ["cost", "--model", "vit_base_patch16_224", "--json"],
        ["tokens", "--preset", "openvla", "--json"],
        ["cost", "--preset", "openvla"],
        ["tokens", "--size", "0", "--patch", "16"],  # errors too
    ],
)
def test_light_commands_import_no_torch(args):
    p = _run_python(args)
    heavy = [line for line in p.stderr.splitlines() if line.startswith("HEAVY=")]
    assert heavy == ["HEAVY="], p.stderr


def test_measure_does_import_torch():
    p = _run_python(["cost", "--variant", "Ti/16", "--measure", "--json"])
    assert p.returncode == 0, p.stderr
    assert "torch" in p.stderr.splitlines()[-1]
    assert json.loads(p.stdout)[0]["measured"]["diff"] == 0


def test_console_script_and_module_entry():
    p = subprocess.run([sys.executable, "-m", "vitcli", "tokens", "-s", "224", "-p", "16", "--json"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and json.loads(p.stdout)["seq_len"] == 197


@pytest.mark.parametrize("command", ["tokens", "variants", "cost", "patchify", "classify", "features", "bench",
                                     "attention", "posembed", "inspect"])
def test_help_first_line_and_example(cli, command):
    r = cli(command, "--help")
    assert r.exit_code == 0
    assert "Example: vitcli " + command in r.stdout


def test_no_command_shows_help_exit_2(cli):
    r = cli()
    assert r.exit_code == 2
    assert "tokens" in r.stdout + r.stderr


def test_unexpected_error_is_one_line_and_debug_shows_traceback(cli, monkeypatch):
    import vitcli.commands.tokens as tokens_mod

    def boom(*a, **k):
        raise RuntimeError("kaput")

    monkeypatch.setattr(tokens_mod, "run_tokens", boom)
    r = cli("tokens", "--size", "224", "--patch", "16")
    assert r.exit_code == 1 and r.stderr.strip().splitlines() == [
        "Error: RuntimeError: kaput; run again with VITCLI_DEBUG=1 to see the traceback, and report it"]
    r = cli("tokens", "--size", "224", "--patch", "16", env={"VITCLI_DEBUG": "1"})
    assert r.exit_code == 1 and "Traceback" in r.stderr


def test_ctrl_c_exits_130(cli, monkeypatch):
    import vitcli.commands.tokens as tokens_mod

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(tokens_mod, "run_tokens", interrupted)
    r = cli("tokens", "--size", "224", "--patch", "16")
    assert r.exit_code == 130 and r.stderr.strip() == "Error: interrupted"


@pytest.mark.parametrize("command", [["tokens"], ["cost"], ["posembed"]])
def test_model_sources_that_cannot_be_read_are_one_clean_line(cli, tmp_path, command):
    empty = tmp_path / "empty"
    empty.mkdir()
    for source, words in ((f"local-dir:{tmp_path / 'missing'}", "no such folder"),
                          (f"local-dir:{empty}", "config.json")):
        r = cli(*command, "--model", source)
        assert r.exit_code == 1 and words in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "VITCLI_DEBUG" not in r.stderr


def test_offline_hub_config_is_a_clean_error(tmp_path):
    import os

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    p = subprocess.run([sys.executable, "-m", "vitcli", "tokens", "--model", "hf-hub:someorg/somevit"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == [p.stderr.strip()]
    assert "cannot fetch the configuration of hf-hub:someorg/somevit (Hugging Face hub: someorg/somevit)" in p.stderr
    assert "HF_HOME" in p.stderr and "local-dir:" in p.stderr

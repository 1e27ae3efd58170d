"""The CLI's edges: light commands import no torch, help texts, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import DATA

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
        ["tokens", "--preset", "qwen2-vl", "--size", "1080x1920", "--json"],
        ["tokens", "--list-presets"],
        ["cost", "--preset", "openvla"],
        ["tokens", "--size", "0", "--patch", "16"],  # errors too
    ],
)
def test_light_commands_import_no_torch(args):
    p = _run_python(args)
    heavy = [line for line in p.stderr.splitlines() if line.startswith("HEAVY=")]
    assert heavy == ["HEAVY="], p.stderr
    if "--size" in args and "0" in args:
        assert p.returncode == 2 and "--size '0' must be at least 1 pixel" in p.stderr
        return
    assert p.returncode == 0, p.stderr
    if "--json" in args:
        assert json.loads(p.stdout)
    else:
        assert p.stdout.strip()


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


def test_a_bad_choice_fails_while_parsing_before_any_model_loads(tmp_path):
    p = _run_python(["features", "photo.jpg", "-o", str(tmp_path / "f.npy"), "--mode", "patchz"])
    lines = [line for line in p.stderr.splitlines() if not line.startswith("HEAVY=")]
    assert p.returncode == 2 and len(lines) == 1
    assert "'patchz' is not one of 'cls', 'patch', 'mean', 'all'" in lines[0]
    assert "HEAVY=" in p.stderr.splitlines()[-1] and p.stderr.splitlines()[-1] == "HEAVY="  # torch never imported


def test_a_new_command_needs_no_decorator_for_one_line_errors(cli):
    """The error boundary is the app's: a command added with nothing but @app.command() is covered."""
    from vitcli.cli import app
    from vitcli.errors import InputError

    def boom(kind: str) -> int:
        raise {"input": InputError("x.jpg: no such file", hint="check the path"), "ctrl-c": KeyboardInterrupt(),
               "bug": ZeroDivisionError("division by zero")}[kind]

    app.command("zz-boom")(boom)
    try:
        results = {kind: cli("zz-boom", kind) for kind in ("input", "ctrl-c", "bug")}
    finally:
        app.registered_commands.pop()
    assert {k: (r.exit_code, r.stderr) for k, r in results.items()} == {
        "input": (1, "Error: x.jpg: no such file; check the path\n"),
        "ctrl-c": (130, "Error: interrupted\n"),
        "bug": (1, "Error: ZeroDivisionError: division by zero; run again with VITCLI_DEBUG=1 to see the traceback, "
                   "and report it\n")}


UNREACHABLE = """
import atexit, socket, sys, time
import vitcli.backend.models  # torch and timm imported before the clock starts

def no_dns(*args, **kwargs):
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

socket.getaddrinfo = no_dns
start = time.perf_counter()
atexit.register(lambda: sys.stderr.write(f"ELAPSED={time.perf_counter() - start:.2f}\\n"))
sys.argv = ["vitcli", *sys.argv[1:]]
from vitcli.cli import main
main()
"""


def test_an_unreachable_hub_fails_in_seconds_with_one_line(tmp_path):
    """No HF_HUB_OFFLINE, a resolver that fails: vitcli notices once, quickly, and says only its own line."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_HOME"] = str(tmp_path / "hf")
    p = subprocess.run([sys.executable, "-c", UNREACHABLE, "classify", str(DATA / "chelsea.jpg"), "--model",
                        "vit_tiny_patch16_224.augreg_in21k_ft_in1k", "--device", "cpu"],
                       capture_output=True, text=True, timeout=300, env=env)
    lines = p.stderr.strip().splitlines()
    elapsed = float(lines.pop()[len("ELAPSED="):])
    assert p.returncode == 1 and len(lines) == 1, p.stderr
    assert lines[0].startswith("Error: cannot fetch the weights of vit_tiny_patch16_224.augreg_in21k_ft_in1k "
                               "(Hugging Face hub: timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k): the hub cannot "
                               "be reached (ConnectError) and they are not in the local cache")
    assert elapsed < 15


def test_many_images_read_as_one_table(cli, tmp_path, tiny_dir):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(50):
        shutil.copy(DATA / "chelsea.jpg", folder / f"{i:02d}.jpg")
    r = cli("classify", folder, "--model", f"local-dir:{tiny_dir}", "--device", "cpu")
    lines = r.stdout.splitlines()
    assert r.exit_code == 0 and len(lines) <= 60
    assert f"50 images in {folder}" in r.stdout
    assert [line.split()[1] for line in lines if ".jpg" in line] == [f"{i:02d}.jpg" for i in range(50)]
    few = cli("classify", DATA / "chelsea.jpg", DATA / "coffee.jpg", "--model", f"local-dir:{tiny_dir}", "--device",
              "cpu")
    assert few.stdout.count("rank") == 2  # a handful: a table each, every rank shown


def test_every_result_type_has_a_renderer():
    """`emit` renders by result type: a command whose result has no renderer would fail only at run time."""
    import importlib
    import pkgutil

    import vitcli.commands
    from vitcli import render

    results = {name for mod in pkgutil.iter_modules(vitcli.commands.__path__)
               for name, obj in vars(importlib.import_module(f"vitcli.commands.{mod.name}")).items()
               if isinstance(obj, type) and name.endswith("Result") and obj.__module__.startswith("vitcli.commands")}
    assert results and results <= set(render._RENDERERS), results - set(render._RENDERERS)

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


# ---- tiny timm models in timm's local-dir format (config.json + model.safetensors), random weights -------------

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
LABELS = ["ant", "bee", "cat", "dog", "eel"]


def make_local_dir(path: Path, seed: int = 0, arch: str = "vit_tiny_patch16_224", cfg: dict | None = None,
                   label_names: list[str] | None = None, **model_kwargs) -> Path:
    """Save a random-weight timm model with timm's own `save_for_hf` (safetensors)."""
    import timm
    import torch
    from timm.models import save_for_hf

    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False, **{**TINY, **model_kwargs})
    model.pretrained_cfg = {**model.pretrained_cfg, **(cfg or {})}
    extra = {"label_names": label_names} if label_names else None
    save_for_hf(model, path, model_config=extra, safe_serialization=True)
    return path


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A ViT with CLS, 5 labelled classes, and a non-ImageNet mean/std and crop_pct (nothing may be hard-coded)."""
    return make_local_dir(tmp_path_factory.mktemp("tiny"), num_classes=5, label_names=LABELS,
                          cfg={"mean": (0.4, 0.5, 0.6), "std": (0.2, 0.25, 0.3), "crop_pct": 0.875})


@pytest.fixture(scope="session")
def tiny_reg_dir(tmp_path_factory) -> Path:
    """A DINOv2-like ViT: CLS + 4 registers, LayerScale, position embedding for patches only, no head."""
    return make_local_dir(tmp_path_factory.mktemp("tinyreg"), seed=1, num_classes=0, reg_tokens=4,
                          no_embed_class=True, init_values=1e-5)


@pytest.fixture(scope="session")
def tiny_nocls_dir(tmp_path_factory) -> Path:
    """A SigLIP-like ViT: no CLS token, attention-pool (map) head, no classifier."""
    return make_local_dir(tmp_path_factory.mktemp("tinynocls"), seed=2, num_classes=0, class_token=False,
                          global_pool="map", cfg={"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)})


def check_golden(name: str, text: str) -> None:
    """Compare with tests/golden/NAME; VITCLI_UPDATE_GOLDEN=1 rewrites it. A missing golden file fails."""
    path = GOLDEN / name
    if os.environ.get("VITCLI_UPDATE_GOLDEN") == "1" and (not path.exists() or path.read_text() != text):
        path.write_text(text)
        pytest.fail(f"{path} rewritten: review `git diff`, then run again without VITCLI_UPDATE_GOLDEN")
    assert path.exists(), f"{path} is missing: run `VITCLI_UPDATE_GOLDEN=1 pytest` once and review it"
    assert text == path.read_text()

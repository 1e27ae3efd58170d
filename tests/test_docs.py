"""Every `<!-- run: ... -->` block in README.md and docs/ holds the real output of its command."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _gen():
    spec = importlib.util.spec_from_file_location("docs_gen", ROOT / "docs" / "gen.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_docs_blocks_are_current():
    import re
    import shutil

    gen = _gen()
    where = gen.scratch_root()  # commands that write pictures write them there, not into docs/img
    try:
        for page in gen.pages():  # every marker is followed by a block the generator fills: none is skipped
            text = page.read_text()
            assert len(re.findall(r"^<!-- run: ", text, re.M)) == len(gen.BLOCK.findall(text)), page.name
        stale = [p.name for p in gen.pages() if gen.render(p.read_text(), where) != p.read_text()]
    finally:
        shutil.rmtree(where)
    assert stale == [], f"run `python docs/gen.py` to refresh: {stale}"


def test_readme_opens_with_install_and_test_commands():
    text = (ROOT / "README.md").read_text()
    first_block = text.split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert first_block == ['pip install -e ".[dev]"', "pytest"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -e ".[dev]"' in ci and "\npytest" in ci

"""Fill every `<!-- run: vitcli ... -->` block in README.md and docs/*.md with that command's real output.

    python docs/gen.py          rewrite the blocks
    python docs/gen.py --check  exit 1 when a block is stale (tests/test_docs.py runs this)

The command runs in-process at COLUMNS=100 from the repository root; its stdout goes into the ```text block
that follows the marker. A marker may end in `-> exit N` when the command is meant to fail.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"<!-- run: (?P<cmd>.+?)(?: -> exit (?P<code>\d+))? -->\n```text\n(?P<out>.*?)```", re.S)


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def run(cmd: str) -> tuple[int, str]:
    from typer.testing import CliRunner

    from vitcli.cli import app

    argv = shlex.split(cmd)
    assert argv[0] == "vitcli", cmd
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        r = CliRunner().invoke(app, argv[1:], env={"COLUMNS": "100", "VITCLI_DOCS": "1"})
    finally:
        os.chdir(cwd)
    return r.exit_code, r.stdout


def render(text: str) -> str:
    def fill(m: re.Match) -> str:
        code, out = run(m["cmd"])
        want = int(m["code"] or 0)
        if code != want:
            raise SystemExit(f"`{m['cmd']}` exited {code}, expected {want}")
        return m.group(0)[: m.start("out") - m.start()] + out + "```"

    return BLOCK.sub(fill, text)


def main(check: bool) -> int:
    stale = []
    for page in pages():
        old = page.read_text()
        new = render(old)
        if new != old:
            stale.append(page.relative_to(ROOT))
            if not check:
                page.write_text(new)
    if stale and check:
        print("stale docs (run `python docs/gen.py`): " + ", ".join(map(str, stale)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main("--check" in sys.argv))

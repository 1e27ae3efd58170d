"""Fill every `<!-- run: vitcli ... -->` block in README.md and docs/*.md with that command's real output.

    python docs/gen.py          rewrite the blocks
    python docs/gen.py --check  exit 1 when a block is stale (tests/test_docs.py runs this)

The command runs in-process at COLUMNS=100 from the repository root; its stdout goes into the ```text block
that follows the marker. A marker may end in `-> exit N` when the command is meant to fail. Commands that
write files (pictures under docs/img/) run in a scratch folder that mirrors the repository; refreshing copies
the pictures they made into docs/img/, checking never touches tracked files.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"<!-- run: (?P<cmd>.+?)(?: -> exit (?P<code>\d+))? -->\n```text\n(?P<out>.*?)```", re.S)


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def scratch_root() -> Path:
    """A temporary folder with the repository's entries linked in, except an empty docs/img/."""
    root = Path(tempfile.mkdtemp(prefix="vitcli-docs-"))
    for entry in ROOT.iterdir():
        if entry.name not in ("docs", ".git"):
            (root / entry.name).symlink_to(entry)
    (root / "docs" / "img").mkdir(parents=True)
    return root


def run(cmd: str, where: Path) -> tuple[int, str]:
    from typer.testing import CliRunner

    from vitcli.cli import app

    argv = shlex.split(cmd)
    assert argv[0] == "vitcli", cmd
    cwd = os.getcwd()
    os.chdir(where)
    try:
        r = CliRunner().invoke(app, argv[1:], env={"COLUMNS": "100", "VITCLI_DOCS": "1"})
    finally:
        os.chdir(cwd)
    return r.exit_code, r.stdout


def render(text: str, where: Path) -> str:
    def fill(m: re.Match) -> str:
        code, out = run(m["cmd"], where)
        want = int(m["code"] or 0)
        if code != want:
            raise SystemExit(f"`{m['cmd']}` exited {code}, expected {want}")
        return m.group(0)[: m.start("out") - m.start()] + out + "```"

    return BLOCK.sub(fill, text)


def main(check: bool) -> int:
    stale = []
    where = scratch_root()
    for page in pages():
        old = page.read_text()
        new = render(old, where)
        if new != old:
            stale.append(page.relative_to(ROOT))
            if not check:
                page.write_text(new)
    if not check:
        for picture in (where / "docs" / "img").glob("*.png"):
            shutil.copyfile(picture, ROOT / "docs" / "img" / picture.name)
    if stale and check:
        print("stale docs (run `python docs/gen.py`): " + ", ".join(map(str, stale)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main("--check" in sys.argv))

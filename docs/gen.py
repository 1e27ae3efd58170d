"""Fill every `<!-- run: vitcli ... -->` block in README.md and docs/*.md with that command's real output.

    python docs/gen.py          rewrite the blocks
    python docs/gen.py --check  exit 1 when a block is stale (tests/test_docs.py runs this)
    python docs/gen.py --retrain  train the tutorial's model again first (docs/models/digits), then rewrite

The command runs in-process at COLUMNS=100 from the repository root; its stdout goes into the ```text block
that follows the marker. A marker may end in `-> exit N` when the command is meant to fail. Commands that
write files (pictures under docs/img/) run in a scratch folder that mirrors the repository; refreshing copies
the pictures they made into docs/img/, checking never touches tracked files.

The tutorial's trained model, docs/models/digits/, is committed; rewriting trains it (`python
docs/train_digits.py docs/models/digits`, ~3 min of CPU) only when it is missing or with --retrain, and
checking never trains.
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
# a picture of an explore page that a run block above it wrote: <!-- shot: PAGE.html -> PICTURE.png [k=v ...] -->
SHOT = re.compile(r"<!-- shot: (?P<page>\S+) -> (?P<png>\S+)(?P<opts>(?: \w+=\S+)*) -->")


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def scratch_root() -> Path:
    """A temporary folder with the repository's entries linked in, except an empty docs/img/."""
    root = Path(tempfile.mkdtemp(prefix="vitcli-docs-"))
    for entry in ROOT.iterdir():
        if entry.name not in ("docs", ".git"):
            (root / entry.name).symlink_to(entry)
    (root / "docs" / "img").mkdir(parents=True)
    if (ROOT / "docs" / "models").is_dir():  # the tutorial's trained model, read by `--model local-dir:...`
        (root / "docs" / "models").symlink_to(ROOT / "docs" / "models")
    if (ROOT / "docs" / "media").is_dir():  # the examples' small inputs (docs/media/make.py), read, never written
        (root / "docs" / "media").symlink_to(ROOT / "docs" / "media")
    return root


DIGITS = ROOT / "docs" / "models" / "digits"


def train_digits(retrain: bool = False) -> None:
    """Make docs/models/digits with docs/train_digits.py (60 epochs, seed 0) when it is missing, or again with
    `retrain`; trained in a new folder beside it, which replaces the old one only when training succeeded."""
    if (DIGITS / "model.safetensors").is_file() and not retrain:
        return
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_digits", ROOT / "docs" / "train_digits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    DIGITS.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=".digits-", dir=DIGITS.parent))
    try:
        print(f"training {DIGITS} with docs/train_digits.py (a few minutes of CPU)", file=sys.stderr)
        module.train(fresh)
        fresh.chmod(0o755)
        if DIGITS.exists():
            shutil.rmtree(DIGITS)
        fresh.rename(DIGITS)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)


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


def shoot(text: str, where: Path, browser=None) -> list[Path]:
    """Take the screenshots the `<!-- shot: ... -->` markers in `text` ask for, of pages written in `where`, into
    `where` (options: hover=ROW,COL block=B head=H|mean). Debian's headless chromium through Playwright
    (`vitcli.explore_page.screenshot`); without it, a note on stderr and no picture (docs/img keeps its own).
    Checking never calls this: pictures are not compared, only text blocks. `browser`: a launched one to reuse."""
    from vitcli import explore_page

    made = []
    for m in SHOT.finditer(text):
        why = explore_page.browser_missing()
        if why:
            print(f"no screenshot {m['png']}: {why}", file=sys.stderr)
            continue
        opts = dict(o.split("=", 1) for o in m["opts"].split())
        hover = tuple(int(v) for v in opts["hover"].split(",")) if "hover" in opts else None
        head = opts.get("head")
        explore_page.screenshot(where / m["page"], where / m["png"], hover=hover,
                                block=int(opts["block"]) if "block" in opts else None,
                                head=None if head is None else head if head == "mean" else int(head), browser=browser)
        made.append(where / m["png"])
    return made


def main(check: bool, retrain: bool = False) -> int:
    if not check:
        train_digits(retrain)
    stale = []
    where = scratch_root()
    for page in pages():
        old = page.read_text()
        new = render(old, where)
        if not check:
            shoot(new, where)
        if new != old:
            stale.append(page.relative_to(ROOT))
            if not check:
                page.write_text(new)
    if not check:
        for picture in sorted((where / "docs" / "img").iterdir()):
            if picture.suffix in (".png", ".gif", ".webp"):  # pictures and animations (`vitcli pca -o x.webp`)
                shutil.copyfile(picture, ROOT / "docs" / "img" / picture.name)
    if stale and check:
        print("stale docs (run `python docs/gen.py`): " + ", ".join(map(str, stale)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main("--check" in sys.argv, retrain="--retrain" in sys.argv))

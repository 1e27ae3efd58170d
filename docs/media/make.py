"""Make the small input files the docs' examples read (docs/video.md, docs/scale.md), deterministically.

    python docs/media/make.py          (from the repository root; rewrites the files listed below)

Everything is built from the ten held-back digit scans in docs/models/digits/samples/ (32x32 RGB, exactly as
the tutorial's digits model saw them in testing) and from tests/videos.py (the test suite's own video and
LeRobot makers, PyAV and pyarrow), so the docs' models give meaningful answers and nothing is downloaded:

- `digits.mp4`    the digits 0 to 9, each shown for 5 frames, at 5 frames per second: 50 frames, 10 s, frame i
                  at i/5 s shows digit i // 5. Lossless H.264 (libx264rgb, qp 0: the decoded frames are the
                  pictures written, bit for bit), a keyframe every 10 frames.
- `digits-cut.mp4`  the same video written with its index first (`+faststart`), then cut to its first 60% of
                  bytes: a recording that stopped mid-write.
- `lerobot/`      a LeRobot v3.0 dataset (tests/videos.py `make_lerobot_v30`): 2 episodes of 4 and 3 steps at
                  10 fps, 2 cameras (`observation.images.top`, `observation.images.wrist`), each camera's
                  episodes back to back in one MP4, 64x48 px; every frame paints its camera and global index.
- `digits-000.tar`, `digits-001.tar`  WebDataset shards (uncompressed tar): sample `sample/00K` is
                  `sample/00K.png` (digit K's scan) and `sample/00K.cls` (its label, text), K = 0-4 in the first
                  and 5-9 in the second. In the second, `sample/007.png` is damaged on purpose (its first 64
                  bytes only), so the docs can show a lost input and failed.txt. Members carry fixed times and
                  owners, so the bytes do not depend on when they were made.
"""

from __future__ import annotations

import io
import shutil
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SAMPLES = ROOT / "docs" / "models" / "digits" / "samples"
FRAMES_PER_DIGIT, FPS, GOP = 5, 5, 10


def digit(k: int):
    """Digit k's held-back scan: (32, 32, 3) uint8."""
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(SAMPLES / f"digit-{k}.png").convert("RGB"))


def make_videos() -> None:
    from videos import make_video, truncate

    frames = [digit(k) for k in range(10) for _ in range(FRAMES_PER_DIGIT)]
    make_video(HERE / "digits.mp4", frames, fps=FPS, gop=GOP)
    whole = make_video(HERE / "digits-whole.mp4", frames, fps=FPS, gop=GOP, faststart=True)
    truncate(whole, 0.6, HERE / "digits-cut.mp4")
    whole.unlink()


def make_lerobot() -> None:
    from videos import make_lerobot_v30

    if (HERE / "lerobot").exists():
        shutil.rmtree(HERE / "lerobot")
    make_lerobot_v30(HERE / "lerobot", episode_lengths=(4, 3), fps=10)


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = len(data), 0, 0o644, 0, 0, "", ""
    tar.addfile(info, io.BytesIO(data))


def make_tars() -> None:
    for shard in range(2):
        with tarfile.open(HERE / f"digits-{shard:03d}.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
            for k in range(5 * shard, 5 * shard + 5):
                png = (SAMPLES / f"digit-{k}.png").read_bytes()
                _member(tar, f"sample/{k:03d}.png", png[:64] if k == 7 else png)
                _member(tar, f"sample/{k:03d}.cls", f"{k}\n".encode())


def main() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    make_videos()
    make_lerobot()
    make_tars()
    total = sum(p.stat().st_size for p in HERE.rglob("*") if p.is_file())
    print(f"{HERE}: {total / 1024:.0f} KiB in all")


if __name__ == "__main__":
    main()

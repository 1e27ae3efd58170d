"""Opening images safely: every PIL mode, EXIF, multi-frame, bad files; resize/crop equal to timm's."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import DATA
from vitcli.errors import InputError
from vitcli.imaging import center_crop, image_to_array, open_image, patchify, resize_shorter, standard_eval, unpatchify


def _gradient(h=40, w=60) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 4, y * 6, (x + y) * 2], axis=-1).astype(np.uint8)


def make_mode(tmp_path: Path, mode: str) -> tuple[Path, str]:
    """A file in `mode`; returns the path and a word the conversion note must contain."""
    rgb = Image.fromarray(_gradient())
    path = tmp_path / f"img_{mode.replace(';', '_')}.png"
    if mode == "CMYK":
        path = path.with_suffix(".jpg")
        rgb.convert("CMYK").save(path)
        return path, "CMYK -> RGB"
    if mode == "I;16":
        a = (np.linspace(0, 65535, 40 * 60).reshape(40, 60)).astype(np.uint16)
        Image.fromarray(a).save(path)  # uint16 -> I;16
        return path, "16-bit"
    if mode == "F":
        path = path.with_suffix(".tif")
        Image.fromarray(np.linspace(0, 1, 40 * 60, dtype=np.float32).reshape(40, 60), "F").save(path)
        return path, "float"
    if mode == "P":
        rgb.convert("P", palette=Image.Palette.ADAPTIVE).save(path)
        return path, "P -> RGB"
    if mode == "PA":  # palette with a transparent index
        p = rgb.convert("P", palette=Image.Palette.ADAPTIVE)
        p.save(path, transparency=0)
        return path, "alpha dropped"
    if mode == "1":
        rgb.convert("1").save(path)
        return path, "1 -> RGB"
    rgb.convert(mode).save(path)
    return path, "alpha dropped" if "A" in mode else ("nothing" if mode == "RGB" else f"{mode} -> RGB")


@pytest.mark.parametrize("mode", ["RGB", "L", "LA", "P", "PA", "RGBA", "CMYK", "I;16", "F", "1"])
def test_every_mode_becomes_rgb(tmp_path, mode):
    path, note = make_mode(tmp_path, mode)
    loaded = open_image(path)
    assert loaded.image.mode == "RGB"
    assert loaded.image.size == (60, 40) and loaded.original_size == (40, 60)
    if note == "nothing":
        assert loaded.conversions == ()
    else:
        assert any(note in c for c in loaded.conversions), loaded.conversions


def test_16_bit_is_scaled_not_clipped(tmp_path):
    a = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(a).save(path)  # uint16 -> I;16
    got = np.asarray(open_image(path).image)[0, :, 0]
    assert got.tolist() == [0, 1, 128, 255]


def test_exif_orientation_applied(tmp_path):
    img = Image.fromarray(_gradient(40, 60))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif.tobytes())
    loaded = open_image(path)
    assert loaded.image.size == (40, 60)  # width and height swapped
    assert any("orientation 6" in c for c in loaded.conversions)


def test_multi_frame_takes_first(tmp_path):
    frames = [Image.new("RGB", (20, 10), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    loaded = open_image(path)
    assert loaded.conversions[0] == "first of 3 frames"
    r, g, b = loaded.image.getpixel((5, 5))
    assert r > 200 and g < 50 and b < 50


def png_header_only(path: Path, w: int, h: int) -> Path:
    """A PNG that claims w x h pixels (for the decompression-bomb check, which reads only the header)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return path


def bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Every kind of bad input, with the words its error must contain."""
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes((DATA / "chelsea.jpg").read_bytes()[:4000])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image\n")
    svg = tmp_path / "drawing.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>')
    return {
        "missing": (tmp_path / "nope.jpg", "no such file"),
        "empty": (empty, "empty file"),
        "truncated": (truncated, "truncated"),
        "not an image": (text, "not an image"),
        "unreadable format": (svg, "not an image PIL can read"),
        "bomb": (png_header_only(tmp_path / "bomb.png", 20000, 20000), "too many pixels"),
    }


@pytest.mark.parametrize("kind", ["missing", "empty", "truncated", "not an image", "unreadable format", "bomb"])
def test_bad_inputs_raise_input_error(tmp_path, kind):
    path, words = bad_inputs(tmp_path)[kind]
    with pytest.raises(InputError) as e:
        open_image(path)
    assert str(path) in e.value.message and words in e.value.message


def test_bomb_limit_is_pils_own(tmp_path, monkeypatch):
    # at the limit vitcli refuses (PIL only warns between 1x and 2x): lower the limit, a small image is refused
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(InputError, match="too many pixels"):
        open_image(DATA / "chelsea.jpg")


@pytest.mark.parametrize("name,size", [("chelsea.jpg", 224), ("camera-gray.png", 224), ("coffee.jpg", 160),
                                       ("horse-rgba.png", 96)])
def test_standard_eval_equals_timm_transform(name, size):
    from timm.data import create_transform

    from vitcli.backend.data import split_transform

    img = open_image(DATA / name).image
    for im in (img, img.transpose(Image.Transpose.ROTATE_90)):  # landscape and portrait
        ours, _ = standard_eval(im, (size, size))
        pil_stages, _ = split_transform(create_transform(input_size=(3, size, size), interpolation="bicubic",
                                                         crop_pct=1.0))
        theirs = im
        for t in pil_stages:
            theirs = t(theirs)
        assert ours.size == theirs.size == (size, size)
        assert np.array_equal(np.asarray(ours), np.asarray(theirs))


def test_resize_and_crop_rounding():
    img = Image.new("RGB", (451, 300))
    assert resize_shorter(img, 224).size == (336, 224)  # int(224 * 451 / 300) = 336
    assert center_crop(Image.new("RGB", (337, 224)), (224, 224)).size == (224, 224)


def test_patchify_order_and_round_trip():
    x = np.arange(4 * 6 * 3, dtype=np.float32).reshape(4, 6, 3)  # (H, W, C)
    rows = patchify(x, (2, 3))
    assert rows.shape == (2 * 2, 2 * 3 * 3)
    # row 1 is the patch at grid (0, 1): pixels [0:2, 3:6], flattened (row, column, channel)
    assert np.array_equal(rows[1], x[0:2, 3:6].reshape(-1))
    assert np.array_equal(unpatchify(rows, (2, 2), (2, 3)), x)


def test_image_to_array_is_to_tensor_scaling():
    import torch
    from torchvision.transforms.functional import to_tensor

    img = open_image(DATA / "coffee.jpg").image
    assert torch.equal(torch.from_numpy(image_to_array(img)).permute(2, 0, 1), to_tensor(img))

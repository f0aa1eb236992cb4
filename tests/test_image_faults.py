"""Image folders as people have them: broken, odd and hostile files, each answered without losing the run."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from conftest import make_imagefolder
from runner.types import Preprocess
from runner.errors import RunnerError
from runner.images import BadImage, read_rgb
from runner.plugins import load_catalog


def build(root, **params):
    component = load_catalog().get("dataset", "imagefolder")
    return component.build(component.params(root=str(root), workers=0, **params), Preprocess(size=32, resize=36),
                           root.parent)


def add_faults(cats):
    """One file of each kind of fault into a class folder; returns {name: expected reason fragment}."""
    good = cats / "cats_0.jpg"
    data = good.read_bytes()
    (cats / "corrupt.jpg").write_bytes(data[:20] + bytes(len(data) - 20))
    (cats / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (cats / "empty.jpg").write_bytes(b"")
    (cats / "notes.png").write_text("not an image at all")
    Image.new("L", (20000, 20000)).save(cats / "bomb.png", optimize=True)
    return {"corrupt.jpg": "", "truncated.jpg": "", "empty.jpg": "empty file", "notes.png": "not an image",
            "bomb.png": "too large"}


def test_unreadable_images_are_skipped_and_counted(tmp_path):
    root = make_imagefolder(tmp_path / "data")
    faults = add_faults(root / "train" / "cats")
    data = build(root)
    assert len(data.train) == 16 and len(data.skipped) == len(faults)
    for name, reason in faults.items():
        (line,) = [s for s in data.skipped if os.path.basename(s.split(" (")[0]) == name]
        assert reason in line
    for i in range(len(data.train)):  # everything left reads
        assert data.train[i][0].shape == (3, 32, 32)


def test_a_preload_decoded_in_threads_keeps_the_order_and_skips_the_same_files(tmp_path, monkeypatch):
    import warnings

    from runner import imagedata

    root = make_imagefolder(tmp_path / "data", per_split=(24, 4))
    faults = add_faults(root / "train" / "cats")
    filters = list(warnings.filters)
    monkeypatch.setattr(imagedata, "decode_threads", lambda: 4)
    threaded = build(root)
    assert warnings.filters == filters  # the guard around the threads leaves the process's warning filters alone
    monkeypatch.setattr(imagedata, "decode_threads", lambda: 1)
    alone = build(root)
    assert len(threaded.train) == 48 >= 32  # enough images for the threaded path
    assert threaded.train.samples == alone.train.samples and threaded.skipped == alone.skipped
    assert sorted(s.split(" (")[0].rsplit("/", 1)[1] for s in threaded.skipped) == sorted(faults)
    assert "too large" in next(s for s in threaded.skipped if "bomb.png" in s)
    loader = threaded.train.loader
    assert len(loader.images) == 48 and all(image.mode == "RGB" for image in loader.images.values())


def test_unreadable_images_with_policy_error_stop_with_the_list(tmp_path):
    root = make_imagefolder(tmp_path / "data")
    add_faults(root / "train" / "cats")
    with pytest.raises(RunnerError, match=r"5 unreadable image\(s\) in .*bad_images: skip"):
        build(root, bad_images="error")


def test_large_sets_are_checked_by_header_without_decoding(tmp_path):
    root = make_imagefolder(tmp_path / "data")
    faults = add_faults(root / "train" / "cats")
    data = build(root, preload=False)
    skipped = {os.path.basename(s.split(" (")[0]) for s in data.skipped}
    assert {"empty.jpg", "notes.png", "bomb.png"} <= skipped <= set(faults)


@pytest.mark.parametrize("mode, make", [
    ("CMYK", lambda: Image.new("CMYK", (40, 30), (0, 255, 255, 0))),
    ("L", lambda: Image.new("L", (40, 30), 128)),
    ("I;16", lambda: Image.fromarray(np.full((30, 40), 65535, dtype=np.uint16))),
    ("RGBA", lambda: Image.new("RGBA", (40, 30), (255, 0, 0, 0))),
    ("P", lambda: Image.new("P", (40, 30), 3)),
    ("1", lambda: Image.new("1", (40, 30), 1)),
])
def test_every_mode_reads_as_rgb(tmp_path, mode, make):
    image = make()
    assert image.mode == mode
    path = tmp_path / ("x.tiff" if mode == "CMYK" else "x.png")
    image.save(path)
    rgb = read_rgb(path)
    assert rgb.mode == "RGB" and rgb.size == (40, 30)
    pixel = rgb.getpixel((0, 0))
    if mode == "I;16":
        assert pixel == (255, 255, 255)  # full-scale 16-bit is white, scaled, not clipped noise
    if mode == "RGBA":
        assert pixel == (255, 255, 255)  # transparent: on white, not black


def test_16_bit_mid_grey_is_scaled_not_clipped(tmp_path):
    Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16)).save(tmp_path / "g.png")
    assert read_rgb(tmp_path / "g.png").getpixel((0, 0)) == (128, 128, 128)


def test_hidden_files_and_folders_symlink_loops_and_non_images(tmp_path):
    root = make_imagefolder(tmp_path / "data")
    cats = root / "train" / "cats"
    (root / "train" / ".ipynb_checkpoints").mkdir()
    (cats / ".hidden.jpg").write_bytes((cats / "cats_0.jpg").read_bytes())
    (cats / "readme.txt").write_text("not listed")
    (cats / "loop").symlink_to(cats, target_is_directory=True)
    data = build(root)
    assert data.classes == ["cats", "dogs"] and len(data.train) == 16 and not data.skipped


def test_class_folder_without_readable_images(tmp_path):
    root = make_imagefolder(tmp_path / "data")
    for image in (root / "train" / "dogs").iterdir():
        image.write_bytes(b"")
    with pytest.raises(RunnerError, match=r"class\(es\) \['dogs'\] have no readable training images"):
        build(root)


def test_bad_image_reasons(tmp_path):
    (tmp_path / "z.jpg").write_bytes(b"")
    with pytest.raises(BadImage, match="empty file"):
        read_rgb(tmp_path / "z.jpg")


def _photo(path, size):
    """A smooth colour gradient with some texture, saved as a JPEG of ``size``: something resampling can tell apart."""
    width, height = size
    x = np.linspace(0, 1, width)[None, :, None]
    y = np.linspace(0, 1, height)[:, None, None]
    rgb = np.concatenate([x * np.ones_like(y), y * np.ones_like(x), 0.5 + 0.3 * np.sin(12 * x + 9 * y)], axis=2)
    Image.fromarray((rgb * 255).astype("uint8")).save(path, quality=92)
    return path


def test_a_large_jpeg_is_decoded_in_draft_mode_close_to_a_full_decode(tmp_path):
    from torchvision.transforms import functional

    big = _photo(tmp_path / "big.jpg", (2400, 1800))
    drafted = read_rgb(big, shorter=256)
    assert drafted.mode == "RGB" and 256 <= min(drafted.size) < 2 * 256  # 1800 / 4 = 450: decoded at a quarter
    full = read_rgb(big)
    assert full.size == (2400, 1800)
    want = np.asarray(functional.resize(full, 256), dtype=float)
    got = np.asarray(functional.resize(drafted, 256), dtype=float)
    assert want.shape == got.shape and np.abs(want - got).mean() < 2.0  # levels of 255
    small = _photo(tmp_path / "small.jpg", (500, 375))  # less than twice 256: decoded whole
    assert read_rgb(small, shorter=256).size == (500, 375)
    png = tmp_path / "big.png"
    full.save(png)
    assert read_rgb(png, shorter=256).size == (2400, 1800)  # draft mode is a JPEG decoder's


def test_predict_reads_files_as_training_does(tmp_path):
    """Transparent pixels are white and large JPEGs drafted for ``runner predict`` too, not only in training."""
    from runner.inference import Files

    rgba = Image.new("RGBA", (40, 40), (10, 200, 10, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 20, 40))  # left half transparent (black underneath)
    rgba.save(tmp_path / "cut_out.png")
    big = _photo(tmp_path / "big.jpg", (2400, 1800))
    files = Files([tmp_path / "cut_out.png", big], lambda image: image, shorter=256)
    cut_out, _, ok = files[0]
    assert ok and cut_out.getpixel((5, 5)) == (255, 255, 255) and cut_out.getpixel((30, 5)) == (10, 200, 10)
    drafted, _, ok = files[1]
    assert ok and drafted.size == read_rgb(big, shorter=256).size == (600, 450)

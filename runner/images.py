"""Reading image files people actually have: any mode made RGB, a guard against decompression bombs, and folder
walks that skip hidden files and survive symlink loops. A file that cannot be read raises :class:`BadImage`."""
from __future__ import annotations

import contextlib
import math
import os
import threading
import warnings
from pathlib import Path
from typing import IO

from PIL import Image, ImageFile

MAX_PIXELS = 64_000_000
"""Larger images are refused (8000x8000): a 20000x20000 PNG of a few kB would take gigabytes to decode."""


class BadImage(Exception):
    """A file that is not a readable image; the message says why in a few words."""


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB: 16/32-bit grey scaled down (not clipped), alpha composited on white, CMYK and
    palettes converted."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        image = image.convert("I")
    if image.mode == "I":
        image = image.point(lambda v: v * (1 / 256)).convert("L")
    elif image.mode == "F":
        image = image.convert("L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB") if image.mode != "RGB" else image


class NormalizedTensor:
    """An 8-bit RGB or grey PIL image as a normalised float tensor, (3, H, W): torchvision's ``ToTensor`` then
    ``Normalize(mean, std)``, the same floats in fewer steps. Those two run ~10 tensor operations per image and
    make the mean and std tensors anew each time, which at Fashion-MNIST's 64 pixels is most of an image's
    transform (about twice this class's time per image here); at 224 pixels the arithmetic dominates: the same.
    A grey ("L") image comes out with its channel repeated three times (what converting it to RGB first gives), so
    grey images can be resized as one channel. Anything else (other PIL modes, arrays) goes through torchvision's
    two. Picklable, for loader worker processes."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        self.mean, self.std = tuple(mean), tuple(std)
        self._tensors: dict = {}
        if not all(self.std):
            raise ValueError(f"std evaluated to zero after conversion to float, leading to division by zero: {std}")

    def __call__(self, image):
        import numpy as np
        import torch

        if not isinstance(image, Image.Image) or image.mode not in ("RGB", "L") or len(self.mean) != 3:
            from torchvision.transforms import functional

            return functional.normalize(functional.to_tensor(image), self.mean, self.std)
        pixels = torch.from_numpy(np.array(image))
        pixels = pixels.unsqueeze(0) if pixels.dim() == 2 else pixels.permute(2, 0, 1).contiguous()
        dtype = torch.get_default_dtype()
        if dtype not in self._tensors:  # made once (per default dtype), not per image
            self._tensors[dtype] = tuple(torch.tensor(v, dtype=dtype).view(-1, 1, 1) for v in (self.mean, self.std))
        mean, std = self._tensors[dtype]
        return (pixels.to(dtype).div_(255) - mean) / std

    def __repr__(self) -> str:
        return f"NormalizedTensor(mean={self.mean}, std={self.std})"


@contextlib.contextmanager
def bomb_guard():
    """PIL's DecompressionBombWarning raised as an error while reading. ``warnings.catch_warnings`` changes
    process-wide state and is not thread-safe, so only the main thread enters it; a pool of decoding threads is
    started inside one guard (runner.imagedata.drop_bad_images), and in any other thread the MAX_PIXELS check,
    below PIL's own limit, refuses the same images."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def read_rgb(path: str | os.PathLike | IO[bytes], decode: bool = True, shorter: int | None = None
             ) -> Image.Image | None:
    """The image at ``path`` (or in a binary file object), fully decoded, as RGB; :class:`BadImage` when it cannot
    be.

    ``decode=False`` checks only what the header tells (an image, not empty, not too large) and returns None:
    cheap enough for sets too large to decode twice; a file corrupt past its header then fails when read.

    ``shorter``: a JPEG whose shorter side is at least twice this is decoded at 1/2, 1/4 or 1/8 of its size (PIL's
    draft mode: libjpeg scales while decoding), the smallest that keeps the shorter side at ``shorter`` or more.
    A 4000x3000 photo for a 256-pixel transform decodes several times faster; the pixels differ from a full decode
    then resize by about what two resampling filters differ by.
    """
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with bomb_guard():
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise BadImage(f"too large ({width}x{height} pixels; the limit is {MAX_PIXELS:,})")
                if not decode:
                    return None
                if shorter and image.format == "JPEG" and min(width, height) >= 2 * shorter:
                    ratio = shorter / min(width, height)
                    image.draft(None, (math.ceil(width * ratio), math.ceil(height * ratio)))
                image.load()
                return to_rgb(image)
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage("too large (decompression-bomb guard)") from None
    except OSError as exc:
        if isinstance(path, (str, os.PathLike)) and os.path.isfile(path) and os.path.getsize(path) == 0:
            raise BadImage("empty file") from None
        text = str(exc).split(" (")[0]
        raise BadImage("truncated or corrupt" if "truncated" in text or "broken" in text else
                       "not an image" if "cannot identify" in text else text) from None
    except (ValueError, SyntaxError) as exc:  # PIL raises these for some malformed headers
        raise BadImage(f"corrupt ({exc})") from None


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""File name endings read as images (torchvision's IMG_EXTENSIONS, without importing torchvision)."""


def walk_files(folder: Path, extensions: tuple[str, ...]) -> list[Path]:
    """Image files under ``folder`` (links followed), hidden files and folders skipped, each real folder once."""
    found, seen = [], set()
    stack = [folder]
    while stack:
        current = stack.pop()
        real = os.path.realpath(current)
        if real in seen:  # a symlink loop, or a folder linked twice
            continue
        seen.add(real)
        try:
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir():
                    stack.append(Path(entry.path))
                elif entry.is_file() and entry.name.lower().endswith(extensions):
                    found.append(Path(entry.path))
            except OSError:  # a dangling link
                continue
    return sorted(found)

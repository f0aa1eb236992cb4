"""Finding a dataset folder a recipe names: next to the recipe, in the working directory, on RUNNER_DATA_PATH,
or downloaded once from the recipe's URL into the user's data cache."""
from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from runner.errors import RunnerError


def data_cache() -> Path:
    """Where downloaded datasets are unpacked: $RUNNER_DATA_HOME, else ~/.cache/runner/data."""
    return Path(os.environ.get("RUNNER_DATA_HOME") or Path.home() / ".cache" / "runner" / "data")


def search_path(base_dir: Path) -> list[Path]:
    """The folders a relative dataset root is looked for in, in order."""
    env = [Path(p) for p in os.environ.get("RUNNER_DATA_PATH", "").split(os.pathsep) if p]
    return [base_dir, Path.cwd(), *env, data_cache()]


def find_root(root: str, base_dir: Path, url: str | None = None) -> Path:
    """The existing folder ``root`` names; downloads and unpacks ``url`` once when it is nowhere."""
    path = Path(root).expanduser()
    candidates = [path] if path.is_absolute() else [d / path for d in search_path(base_dir)]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    where = ", ".join(str(c.parent) for c in candidates)
    if not url:
        raise RunnerError(f"dataset folder '{root}' not found in {where}; put it in one of those or add its "
                          "parent folder to RUNNER_DATA_PATH")
    target = data_cache() / path.name
    try:
        download_zip(url, data_cache())
    except OSError as exc:
        raise RunnerError(f"dataset folder '{root}' not found in {where}, and downloading {url} failed "
                          f"({getattr(exc, 'reason', exc)}); download it by hand and unpack it to {target}, "
                          "or add its parent folder to RUNNER_DATA_PATH") from None
    if not target.is_dir():
        raise RunnerError(f"{url} did not unpack a folder named '{path.name}' in {data_cache()}")
    return target


def download_zip(url: str, into: Path) -> None:
    """Fetch a zip and unpack it into ``into``, through a temporary folder so a failure leaves nothing half-made."""
    into.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=into) as tmp:
        archive = Path(tmp) / "download.zip"
        with urllib.request.urlopen(url, timeout=30) as response, open(archive, "wb") as out:
            shutil.copyfileobj(response, out)
        unpacked = Path(tmp) / "unpacked"
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(unpacked)
        for item in unpacked.iterdir():
            if item.name != "__MACOSX" and not (into / item.name).exists():
                item.rename(into / item.name)

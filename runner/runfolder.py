"""The run folder: a fresh folder per run, and writes that are atomic (temp file + rename) so an interrupted
write never leaves a torn file where a good one was."""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml


def new_run_folder(output: str | Path, name: str) -> Path:
    """``output/name-YYYYmmdd-HHMMSS``, suffixed ``-2``, ``-3``... when a run already took that name."""
    from runner.errors import RunnerError

    output = Path(output)
    try:
        output.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=output, prefix=".runner-write-test")
        probe.close()
    except OSError as exc:
        raise RunnerError(f"cannot write run folders in {output}: {exc.strerror or exc}; set output: to a "
                          "writable folder") from None
    stem = f"{name.replace('/', '_')}-{time.strftime('%Y%m%d-%H%M%S')}"
    for n in range(1, 10_000):
        folder = output / (stem if n == 1 else f"{stem}-{n}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(f"no free run folder name under {output}")


def _atomic(path: Path, write) -> None:
    """Write to a temporary file beside ``path``, then rename: ``path`` is the old file or the new, never torn.

    A failed write (disk full, file too large) removes the temporary file and raises a RunnerError saying the
    previous file is intact.
    """
    from runner.errors import RunnerError

    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, Exception):  # torch.save reports a short write as a RuntimeError, not an OSError
            kept = "the previous one is intact" if path.exists() else "nothing was written"
            reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
            raise RunnerError(f"cannot write {path} ({reason}): is the disk full? {kept}") from exc
        raise


def save_torch(obj: Any, path: Path) -> None:
    _atomic(path, lambda f: torch.save(obj, f))


def save_bytes(data: bytes, path: Path) -> None:
    _atomic(path, lambda f: f.write(data))


def save_text(text: str, path: Path) -> None:
    _atomic(path, lambda f: f.write(text.encode("utf-8")))


def save_json(obj: Any, path: Path) -> None:
    save_text(json.dumps(obj, indent=2) + "\n", path)


def save_yaml(obj: Any, path: Path) -> None:
    save_text(yaml.safe_dump(obj, sort_keys=False), path)


def append_jsonl(obj: Any, path: Path) -> None:
    """Append one JSON line; a line is written whole with one write call."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj) + "\n")

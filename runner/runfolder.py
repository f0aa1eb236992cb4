"""The run folder: a fresh folder per run, and writes that are atomic (temp file + rename) so an interrupted
write never leaves a torn file where a good one was."""
from __future__ import annotations

import errno
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

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


def _umask() -> int:
    """The process's umask, read without changing it where Linux tells it (os.umask can only set it)."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def _why_not_written(exc: Exception, path: Path) -> str:
    """What a failed write suggests, as the message's middle: a full disk is not the same fix as a folder one may
    not write in."""
    code = getattr(exc, "errno", None)
    if code in (errno.EACCES, errno.EPERM):
        return f"no permission to write in {path.parent}; "
    if code == errno.EROFS:
        return f"{path.parent} is on a read-only file system; "
    if code in (None, errno.ENOSPC, errno.EDQUOT, errno.EFBIG):  # torch reports a short write as a RuntimeError
        return "is the disk full? "
    return ""


def atomic_write(path: Path, write) -> None:
    """Write to a temporary file beside ``path``, then rename: ``path`` is the old file or the new, never torn.

    The file gets the mode a plain ``open`` would give (the umask's), not the temporary file's 0600. A failed write
    (disk full, no permission, file too large) removes the temporary file and raises a RunnerError saying why and
    that the previous file is intact.
    """
    from runner.errors import RunnerError

    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, Exception):  # torch.save reports a short write as a RuntimeError, not an OSError
            kept = "the previous one is intact" if path.exists() else "nothing was written"
            reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
            raise RunnerError(f"cannot write {path} ({reason}): {_why_not_written(exc, path)}{kept}") from exc
        raise


def save_torch(obj: Any, path: Path) -> None:
    import torch

    atomic_write(path, lambda f: torch.save(obj, f))


def save_bytes(data: bytes, path: Path) -> None:
    atomic_write(path, lambda f: f.write(data))


def save_text(text: str, path: Path) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def save_json(obj: Any, path: Path) -> None:
    save_text(json.dumps(obj, indent=2) + "\n", path)


def save_yaml(obj: Any, path: Path) -> None:
    save_text(yaml.safe_dump(obj, sort_keys=False), path)


def append_jsonl(obj: Any, path: Path) -> None:
    """Append one JSON line; a line is written whole with one write call."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj) + "\n")

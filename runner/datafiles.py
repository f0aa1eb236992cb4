"""Finding a dataset folder a recipe names: next to the recipe, in the working directory, on RUNNER_DATA_PATH,
or downloaded once from the recipe's URL into the user's data cache.

A downloaded zip is a stranger's file, so the download is bounded and only the recipe's ``root`` folder is taken
from it (never another entry, never over an existing folder, never outside the cache). The bounds are environment
variables, since they belong to the machine rather than the recipe:

- ``RUNNER_DOWNLOAD_MAX_MB`` (default 20000): the largest zip downloaded, in MiB.
- ``RUNNER_UNZIP_MAX_MB`` (default 50000): the largest total unpacked size of the root folder, in MiB.
- ``RUNNER_UNZIP_MAX_RATIO`` (default 100): the largest unpacked size per byte of zip (a zip bomb's is ~1000).
- ``RUNNER_DOWNLOAD_DEADLINE_S`` (default 7200): the whole download must finish within this many seconds.
- ``RUNNER_DOWNLOAD_TIMEOUT_S`` (default 30): the longest wait for the server to send anything.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import lzma
import os
import re
import shutil
import stat
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from runner.errors import RunnerError

SCHEMES = ("https", "http")
MiB = 1 << 20
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, lzma.LZMAError, EOFError, NotImplementedError,
              RuntimeError, ValueError)
"""What zipfile raises on a damaged, encrypted or unsupported archive (bz2 damage is an OSError)."""


class BadDownload(Exception):
    """What was wrong with a download, in a few words; find_root turns it into the one-line error."""


def data_cache() -> Path:
    """Where downloaded datasets are unpacked: $RUNNER_DATA_HOME, else ~/.cache/runner/data."""
    return Path(os.environ.get("RUNNER_DATA_HOME") or Path.home() / ".cache" / "runner" / "data")


def search_path(base_dir: Path) -> list[Path]:
    """The folders a relative dataset root is looked for in, in order."""
    env = [Path(p) for p in os.environ.get("RUNNER_DATA_PATH", "").split(os.pathsep) if p]
    return [base_dir, Path.cwd(), *env, data_cache()]


def find_root(root: str, base_dir: Path, url: str | None = None, sha256: str | None = None) -> Path:
    """The existing folder ``root`` names; downloads ``url`` once when it is nowhere and unpacks its ``root``
    folder, after checking the zip's ``sha256`` when one is given."""
    if url:
        check_url(url)
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256.strip()):
        raise RunnerError(f"dataset sha256 '{sha256}': expected 64 hexadecimal digits, the zip's SHA-256")
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
        download_zip(url, data_cache(), path.name, sha256)
    except (BadDownload, OSError) as exc:
        raise RunnerError(f"dataset folder '{root}' not found in {where}, and downloading {url} failed "
                          f"({_reason(exc)}); download it by hand and unpack it to {target}, "
                          "or add its parent folder to RUNNER_DATA_PATH") from None
    if not target.is_dir():
        raise RunnerError(f"{url} did not unpack a folder named '{path.name}' in {data_cache()}")
    return target


def check_url(url: str) -> None:
    """Only web URLs: a recipe must not make the runner read local files or speak other protocols."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise RunnerError(f"dataset url '{url}': {f'scheme {scheme}:' if scheme else 'no scheme'} is not supported; "
                          "expected an https:// or http:// URL")


def limit(name: str, default: float) -> float:
    """A positive number from environment variable ``name`` (see the module docstring)."""
    text = os.environ.get(name, "").strip()
    try:
        value = float(text) if text else default
    except ValueError:
        value = -1
    if not value > 0:
        raise RunnerError(f"{name}={text}: expected a positive number (default {default:g})")
    return value


def download_zip(url: str, into: Path, name: str, sha256: str | None = None) -> None:
    """Fetch a zip and move its folder ``name`` into ``into``, through a temporary folder inside ``into`` that is
    removed however this ends, so a failure leaves nothing half-made."""
    into.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp(into)
    tmp = Path(tempfile.mkdtemp(dir=into, prefix=f".download-{os.getpid()}-"))
    try:
        archive = tmp / "download.zip"
        got = fetch(url, archive)
        if sha256 is not None and got != sha256.strip().lower():
            raise BadDownload(f"its sha256 is {got}, expected {sha256.strip().lower()}")
        unpacked = tmp / "unpacked"
        unpacked.mkdir()
        unpack(archive, unpacked, name)
        if not (unpacked / name).is_dir():
            raise BadDownload(f"the zip's '{name}' is a file; expected a folder")
        if not (into / name).exists():  # another process may have unpacked it meanwhile: keep theirs
            (unpacked / name).rename(into / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_stale_temp(into: Path) -> None:
    """Temporary folders a killed download left (its process is gone)."""
    for folder in into.glob(".download-*-*"):
        pid = folder.name.split("-")[1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


class _WebOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) only (urllib would also follow one to ftp:)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme.lower() not in SCHEMES:
            raise BadDownload(f"it redirects to {newurl}; expected an https:// or http:// URL")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch(url: str, out: Path) -> str:
    """Stream ``url`` to ``out`` within the size cap and the deadline; returns its sha256."""
    max_bytes = limit("RUNNER_DOWNLOAD_MAX_MB", 20000) * MiB
    deadline_s = limit("RUNNER_DOWNLOAD_DEADLINE_S", 7200)
    timeout = min(limit("RUNNER_DOWNLOAD_TIMEOUT_S", 30), deadline_s)
    started = time.monotonic()
    opener = urllib.request.build_opener(_WebOnlyRedirects)
    digest, received = hashlib.sha256(), 0
    try:
        with opener.open(url, timeout=timeout) as response, open(out, "wb") as f, _progress(url) as progress:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if total is not None and total > max_bytes:
                raise BadDownload(f"it is {total / MiB:.0f} MiB, over RUNNER_DOWNLOAD_MAX_MB={max_bytes / MiB:g}")
            task = progress.add_task("download", total=total) if progress else None
            while chunk := response.read1(MiB):  # one socket read at a time, so the deadline is checked often
                received += len(chunk)
                if received > max_bytes:
                    raise BadDownload(f"it is over RUNNER_DOWNLOAD_MAX_MB={max_bytes / MiB:g}")
                if time.monotonic() - started > deadline_s:
                    raise BadDownload(f"it took over RUNNER_DOWNLOAD_DEADLINE_S={deadline_s:g} seconds "
                                      f"({received} bytes received)")
                digest.update(chunk)
                f.write(chunk)
                if task is not None:
                    progress.update(task, completed=received)
            kind = response.headers.get_content_type()
    except urllib.error.HTTPError as exc:
        raise BadDownload(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise BadDownload(_reason(exc)) from None
    except TimeoutError:
        raise BadDownload(f"the server sent nothing for {timeout:g} seconds (RUNNER_DOWNLOAD_TIMEOUT_S)") from None
    except http.client.HTTPException as exc:
        raise BadDownload(f"the server broke off the response ({type(exc).__name__}) after {received} "
                          "bytes") from None
    if total is not None and received < total:
        raise BadDownload(f"the server closed the connection after {received} of {total} bytes")
    if not received:
        raise BadDownload("the server sent an empty body")
    if not zipfile.is_zipfile(out):
        if kind == "application/zip":
            raise BadDownload(f"it is not a complete zip archive ({received} bytes; truncated?)")
        raise BadDownload(f"it is not a zip archive (the server sent {kind}, {received} bytes)")
    return digest.hexdigest()


def _progress(url: str):
    """A transient rich progress bar on a terminal; nothing (a null context) in logs and tests."""
    if not sys.stderr.isatty():
        return contextlib.nullcontext()
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    return Progress(TextColumn(url.rsplit("/", 1)[-1][:40]), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    console=Console(stderr=True), transient=True)


def unpack(archive: Path, into: Path, name: str) -> None:
    """Unpack the entries under ``name/`` of ``archive`` into ``into``, after checking every entry is a plain file
    or folder inside it and the total stays within RUNNER_UNZIP_MAX_MB and RUNNER_UNZIP_MAX_RATIO."""
    max_bytes = limit("RUNNER_UNZIP_MAX_MB", 50000) * MiB
    ratio = limit("RUNNER_UNZIP_MAX_RATIO", 100)
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [(info, _member_path(info)) for info in zf.infolist()]
            taken = [(info, parts) for info, parts in members if parts and parts[0] == name]
            if not taken:
                tops = sorted({parts[0] for _, parts in members if parts})
                raise BadDownload(f"the zip has no folder '{name}' (it holds {', '.join(tops[:5]) or 'nothing'}"
                                  f"{', ...' if len(tops) > 5 else ''})")
            declared, size = sum(info.file_size for info, _ in taken), archive.stat().st_size
            allowed = min(max_bytes, ratio * size)
            if declared > allowed:
                raise BadDownload(f"'{name}' unpacks to {declared / MiB:.1f} MiB from a {size / MiB:.1f} MiB zip, over "
                                  f"RUNNER_UNZIP_MAX_MB={max_bytes / MiB:g} or RUNNER_UNZIP_MAX_RATIO={ratio:g}")
            written = 0
            for info, parts in taken:
                target = into.joinpath(*parts)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as source, open(target, "xb") as out:
                    while chunk := source.read(MiB):
                        written += len(chunk)
                        if written > allowed:  # sizes in the zip's header are the zip's word only
                            raise BadDownload(f"'{name}' unpacks to more than its zip declares "
                                              f"({declared} bytes)")
                        out.write(chunk)
    except ZIP_ERRORS as exc:
        raise BadDownload(f"a damaged or unsupported zip ({type(exc).__name__}: {str(exc)[:80]})") from None
    except FileExistsError as exc:
        raise BadDownload(f"the zip holds '{Path(exc.filename).relative_to(into)}' twice") from None


def _member_path(info: zipfile.ZipInfo) -> tuple[str, ...]:
    """The entry's path parts; () for macOS metadata; a BadDownload for an entry that could land outside the
    folder it is unpacked into (absolute, ``..``, a drive, a symlink)."""
    name = info.filename
    if stat.S_ISLNK(info.external_attr >> 16):
        raise BadDownload(f"the zip entry '{name}' is a symbolic link; expected plain files and folders")
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name) or ".." in parts or \
            any("\\" in p for p in parts):
        raise BadDownload(f"the zip entry '{name}' points outside the folder it unpacks into; expected relative "
                          "paths")
    if not parts or parts[0] == "__MACOSX":
        return ()
    return parts


def _reason(exc: BaseException) -> str:
    """A short, one-line reason for a failed download."""
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
    return str(reason).splitlines()[0] if str(reason) else type(exc).__name__

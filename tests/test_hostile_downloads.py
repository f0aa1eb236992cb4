"""Hostile and broken downloads: zips made here and served from a loopback HTTP server. Every failure is one line
naming the URL, only the recipe's root folder is unpacked, nothing lands outside the data cache, no temp is left."""
from __future__ import annotations

import hashlib
import http.server
import io
import os
import re
import stat
import subprocess
import sys
import threading
import time
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.datafiles import find_root
from runner.errors import RunnerError


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.routes[path]``: (status, content type, body bytes, how) with how one of ``whole``,
    ``no-length`` (no Content-Length, body until close), ``cut`` (half the body, then close), ``trickle``."""

    def do_GET(self):
        status, kind, body, how = self.server.routes.get(self.path, (404, "text/html", b"<h1>Not Found</h1>", "whole"))
        self.send_response(status)
        self.send_header("Content-Type", kind)
        if how != "no-length":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if how == "trickle":
            for byte in body[:60]:  # a byte each 0.05 s: at most 3 s, then the handler ends by itself
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.05)
        else:
            self.wfile.write(body[:len(body) // 2] if how == "cut" else body)
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def serve(monkeypatch):
    """``serve(path, body, ...)`` -> the URL serving it from 127.0.0.1."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.routes = {}
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    monkeypatch.setenv("no_proxy", "127.0.0.1")

    def add(path, body, kind="application/zip", status=200, how="whole"):
        server.routes[path] = (status, kind, body, how)
        return f"http://127.0.0.1:{server.server_address[1]}{path}"

    yield add
    server.shutdown()
    server.server_close()


def make_zip(entries: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def data_home(tmp_path):
    return tmp_path / "data-home"


def leftovers(tmp_path) -> list[str]:
    """Temporary download folders still in the data cache."""
    home = data_home(tmp_path)
    return sorted(p.name for p in home.glob(".download-*")) if home.is_dir() else []


def fails(url, tmp_path, root="wanted", sha256=None) -> str:
    """The one-line message find_root fails with; no temp left behind, nothing unpacked."""
    with pytest.raises(RunnerError) as info:
        find_root(root, tmp_path, url, sha256)
    (message,) = info.value.problems
    assert url in message
    assert leftovers(tmp_path) == [] and not (data_home(tmp_path) / root).exists()
    return message


def test_only_the_root_folder_is_taken_and_other_data_sets_are_kept(tmp_path, serve):
    other = data_home(tmp_path) / "other"
    other.mkdir(parents=True)
    (other / "mine.txt").write_text("a user's data set")
    url = serve("/two.zip", make_zip({"wanted/train/a.txt": b"a", "wanted/val/b.txt": b"b",
                                      "other/planted.txt": b"x", "third/c.txt": b"c", "__MACOSX/wanted/._a": b""}))
    root = find_root("wanted", tmp_path, url)
    assert root == data_home(tmp_path) / "wanted" and (root / "train" / "a.txt").read_bytes() == b"a"
    assert sorted(p.name for p in data_home(tmp_path).iterdir()) == ["other", "wanted"]
    assert sorted(p.name for p in other.iterdir()) == ["mine.txt"]
    message = fails(serve("/no-root.zip", make_zip({"third/c.txt": b"c"})), tmp_path, root="missing")
    assert "the zip has no folder 'missing' (it holds third)" in message
    assert "the zip's 'solo' is a file; expected a folder" in fails(serve("/file.zip", make_zip({"solo": b"x"})),
                                                                     tmp_path, root="solo")


@pytest.mark.parametrize("name", ["wanted/../../evil.txt", "../evil.txt", "/tmp/evil.txt", "wanted/..\\evil.txt",
                                  "C:/evil.txt", "wanted/link"])
def test_entries_that_could_escape_the_folder_are_refused(tmp_path, serve, name):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("wanted/ok.txt", b"ok")
        info = zipfile.ZipInfo(name)
        if name.endswith("link"):
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, b"/etc/passwd" if name.endswith("link") else b"evil")
    message = fails(serve("/slip.zip", buffer.getvalue()), tmp_path)
    assert f"the zip entry '{name}'" in message
    assert "symbolic link" in message if name.endswith("link") else "points outside" in message
    assert not list(tmp_path.rglob("evil.txt"))


def test_a_zip_bomb_is_refused_by_ratio_and_by_size(tmp_path, serve, monkeypatch):
    bomb = make_zip({"wanted/zeros.bin": bytes(4 << 20)})  # 4 MiB of zeros in a ~4 KiB zip
    assert len(bomb) < 10_000
    assert "over RUNNER_UNZIP_MAX_MB=50000 or RUNNER_UNZIP_MAX_RATIO=100" in fails(serve("/bomb.zip", bomb), tmp_path)
    monkeypatch.setenv("RUNNER_UNZIP_MAX_RATIO", "1000000")
    monkeypatch.setenv("RUNNER_UNZIP_MAX_MB", "1")
    plain = make_zip({"wanted/noise.bin": os.urandom(2 << 20)}, zipfile.ZIP_STORED)
    assert "unpacks to 2.0 MiB" in fails(serve("/big.zip", plain), tmp_path)


def test_the_download_size_is_capped_with_and_without_a_content_length(tmp_path, serve, monkeypatch):
    monkeypatch.setenv("RUNNER_DOWNLOAD_MAX_MB", "0.5")
    body = make_zip({"wanted/noise.bin": os.urandom(1 << 20)}, zipfile.ZIP_STORED)
    assert "it is 1 MiB, over RUNNER_DOWNLOAD_MAX_MB=0.5" in fails(serve("/a.zip", body), tmp_path)
    assert "it is over RUNNER_DOWNLOAD_MAX_MB=0.5" in fails(serve("/b.zip", body, how="no-length"), tmp_path)


def test_sha256_is_checked_before_unpacking(tmp_path, serve):
    body = make_zip({"wanted/a.txt": b"a"})
    url = serve("/data.zip", body)
    good, bad = hashlib.sha256(body).hexdigest(), "0" * 64
    message = fails(url, tmp_path, sha256=bad)
    assert f"its sha256 is {good}, expected {bad}" in message
    with pytest.raises(RunnerError, match="dataset sha256 'abc': expected 64 hexadecimal digits"):
        find_root("wanted", tmp_path, url, "abc")
    assert find_root("wanted", tmp_path, url, good.upper()) == data_home(tmp_path) / "wanted"


@pytest.mark.parametrize("url, scheme", [("file:///etc/passwd", "scheme file:"), ("ftp://host/x.zip", "scheme ftp:"),
                                         ("data.zip", "no scheme")])
def test_only_web_urls_are_fetched(tmp_path, url, scheme):
    with pytest.raises(RunnerError) as info:
        find_root("wanted", tmp_path, url)
    assert info.value.problems == [f"dataset url '{url}': {scheme} is not supported; expected an https:// or "
                                   "http:// URL"]


def test_a_redirect_to_another_scheme_is_refused(tmp_path, serve):
    class Redirect(Handler):
        def do_GET(self):
            self.send_response(302)
            self.send_header("Location", "ftp://127.0.0.1/x.zip")
            self.end_headers()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/x.zip"
        assert "it redirects to ftp://127.0.0.1/x.zip; expected an https:// or http:// URL" in fails(url, tmp_path)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("how, expected", [
    ("404", r"\(HTTP 404 Not Found\)"),
    ("html", r"\(it is not a zip archive \(the server sent text/html, \d+ bytes\)\)"),
    ("empty", r"\(the server sent an empty body\)"),
    ("truncated", r"\(it is not a complete zip archive \(\d+ bytes; truncated\?\)\)"),
    ("cut", r"\(the server closed the connection after \d+ of \d+ bytes\)"),
    ("damaged", r"\(a damaged or unsupported zip \(BadZipFile: Bad CRC-32 for file 'wanted/a.txt'\)\)"),
])
def test_broken_responses_are_one_line_naming_the_url(tmp_path, serve, how, expected):
    body = make_zip({"wanted/a.txt": b"hello " * 100}, zipfile.ZIP_STORED)
    url = {"404": lambda: serve("/x.zip", b"gone", "text/html", status=404),
           "html": lambda: serve("/x.zip", b"<!DOCTYPE html><html>Sign in</html>", "text/html"),
           "empty": lambda: serve("/x.zip", b""),
           "truncated": lambda: serve("/x.zip", body[:len(body) // 2]),
           "cut": lambda: serve("/x.zip", body, how="cut"),
           "damaged": lambda: serve("/x.zip", body.replace(b"hello", b"jello", 1))}[how]()
    message = fails(url, tmp_path)
    assert message.startswith("dataset folder 'wanted' not found in ") and f"downloading {url} failed" in message
    assert re.search(expected, message), message


def test_a_trickling_server_hits_the_deadline(tmp_path, serve, monkeypatch):
    monkeypatch.setenv("RUNNER_DOWNLOAD_DEADLINE_S", "1")
    url = serve("/slow.zip", make_zip({"wanted/a.txt": b"a" * 1000}, zipfile.ZIP_STORED), how="trickle")
    started = time.monotonic()
    assert "it took over RUNNER_DOWNLOAD_DEADLINE_S=1 seconds" in fails(url, tmp_path)
    assert time.monotonic() - started < 2


def test_a_bad_limit_setting_is_one_line(tmp_path, serve, monkeypatch):
    monkeypatch.setenv("RUNNER_DOWNLOAD_DEADLINE_S", "soon")
    with pytest.raises(RunnerError, match=r"^RUNNER_DOWNLOAD_DEADLINE_S=soon: expected a positive number "
                                          r"\(default 7200\)$"):
        find_root("wanted", tmp_path, serve("/x.zip", make_zip({"wanted/a": b""})))


def test_temp_folders_of_a_killed_download_are_removed_by_the_next(tmp_path, serve):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    home = data_home(tmp_path)
    stale, live = home / f".download-{int(dead.stdout)}-abc", home / f".download-{os.getppid()}-def"
    for folder in (stale, live):
        folder.mkdir(parents=True)
        (folder / "download.zip").write_bytes(b"half a zip")
    find_root("wanted", tmp_path, serve("/x.zip", make_zip({"wanted/a.txt": b"a"})))
    assert not stale.exists() and live.exists()  # another process's download in progress is left alone


names = st.lists(st.sampled_from(["wanted", "other", "..", ".", "", "/", "\\", "__MACOSX", "a", "b.txt", "C:",
                                  "x" * 300]) | st.text(max_size=8), min_size=1, max_size=4).map("/".join)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.lists(st.tuples(names, st.binary(max_size=64), st.booleans()), max_size=5),
       flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=3),
       noise=st.none() | st.binary(max_size=200))
@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_fuzzed_zips_unpack_or_raise_the_projects_error(tmp_path_factory, serve, monkeypatch, entries, flips, noise):
    """Random member names and contents, a few flipped bytes, or random bytes: a folder inside the data cache, or
    a RunnerError; nothing is written anywhere else."""
    sandbox = tmp_path_factory.mktemp("fuzz")
    home = sandbox / "a" / "b" / "c" / "data-home"
    monkeypatch.setenv("RUNNER_DATA_HOME", str(home))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data, link in entries:
            info = zipfile.ZipInfo(name or "x")
            if link:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, data, zipfile.ZIP_DEFLATED)
    body = bytearray(buffer.getvalue())
    for at, value in flips:
        body[at % len(body)] = value
    url = serve("/fuzz.zip", bytes(body) if noise is None else noise)
    try:
        root = find_root("wanted", sandbox, url)
        assert root == home / "wanted" and root.is_dir()
    except RunnerError as exc:
        assert len(exc.problems) == 1 and "\n" not in exc.problems[0]
    allowed = {sandbox / "a", sandbox / "a" / "b", home.parent, home}
    assert {p for p in sandbox.rglob("*") if home / "wanted" != p and home / "wanted" not in p.parents} <= allowed

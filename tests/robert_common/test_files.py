"""robert_common.files: private files are 0600 whatever the umask, never readable by others while
written; the atomic write leaves the old content or the new one, the exclusive create refuses a file
that exists, the append appends."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from robert_common import files
from robert_common.files import create_private, open_private_append, write_private


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(params=[0o000, 0o277], ids=["umask-0", "umask-277"])
def open_umask(request: pytest.FixtureRequest) -> Iterator[None]:
    """Umask 0: a file created with the default mode (0666) would be readable and writable by all;
    umask 277: a file created 0600 would be 0400 (the owner could not rewrite it)."""
    old = os.umask(request.param)
    try:
        yield
    finally:
        os.umask(old)


def _others(folder: Path, *keep: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


class _Crash(Exception):
    pass


class _Spy:
    """A file opened by robert_common.files whose writes first call ``before`` (see _spy_writes)."""

    def __init__(self, file: BinaryIO, before: Callable[[_Spy, bytes], None]) -> None:
        self.file, self.before = file, before

    def __enter__(self) -> _Spy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()

    def fileno(self) -> int:
        return self.file.fileno()

    def flush(self) -> None:
        self.file.flush()

    def write(self, data: bytes) -> int:
        self.before(self, data)
        return self.file.write(data)


def _spy_writes(monkeypatch: pytest.MonkeyPatch, before: Callable[[_Spy, bytes], None]) -> None:
    real_fdopen = os.fdopen
    monkeypatch.setattr(files.os, "fdopen", lambda fd, mode: _Spy(real_fdopen(fd, mode), before))


# --- write_private --------------------------------------------------------------------------------


def test_write_private_writes_0600_and_replaces_a_readable_file(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "key.pem"
    write_private(path, b"first")
    assert path.read_bytes() == b"first" and _mode(path) == 0o600
    path.chmod(0o644)  # as an earlier version may have left it
    write_private(path, b"second")
    assert path.read_bytes() == b"second" and _mode(path) == 0o600
    assert _others(tmp_path, "key.pem") == []  # no temp file left


def test_write_private_is_never_readable_by_others_while_written(
    tmp_path: Path, open_umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    modes: list[int] = []  # the file's mode each time content is written to it

    def before_write(f: _Spy, data: bytes) -> None:
        modes.append(stat.S_IMODE(os.fstat(f.fileno()).st_mode))

    _spy_writes(monkeypatch, before_write)
    write_private(tmp_path / "secret", b"x" * 10_000)
    assert modes == [0o600]


def test_write_private_onto_a_folder_fails_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "folder"
    (target / "inside").mkdir(parents=True)  # the rename target is a folder: os.replace fails
    with pytest.raises(IsADirectoryError):
        write_private(target, b"new content")
    assert _others(target) == ["inside"]
    assert _others(tmp_path, "folder") == []  # the temp file was removed


@pytest.mark.parametrize("fails", ["write", "fsync", "replace"])
def test_write_private_keeps_old_or_new_content_never_a_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails: str
) -> None:
    path = tmp_path / "store.json"
    write_private(path, b"old " * 1000)

    def crash(*args: object, **kwargs: object) -> None:
        raise _Crash

    if fails == "write":  # the disk fills half-way: half of the new content is in the temp file

        def half_then_crash(f: _Spy, data: bytes) -> None:
            f.file.write(data[: len(data) // 2])
            f.file.flush()
            raise _Crash

        _spy_writes(monkeypatch, half_then_crash)
    else:
        monkeypatch.setattr(files.os, fails, crash)
    with pytest.raises(_Crash):
        write_private(path, b"new " * 1000)
    monkeypatch.undo()
    assert path.read_bytes() == b"old " * 1000
    assert _others(tmp_path, "store.json") == []


# --- create_private -------------------------------------------------------------------------------


def test_create_private_creates_0600(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "pepper"
    create_private(path, b"value")
    assert path.read_bytes() == b"value" and _mode(path) == 0o600


def test_create_private_refuses_a_file_that_exists(tmp_path: Path) -> None:
    path = tmp_path / "pepper"
    path.write_bytes(b"the first process's")
    path.chmod(0o640)
    with pytest.raises(FileExistsError):
        create_private(path, b"another")
    assert path.read_bytes() == b"the first process's" and _mode(path) == 0o640  # untouched
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")  # not even through a dangling link
    with pytest.raises(FileExistsError):
        create_private(link, b"another")
    assert not (tmp_path / "nowhere").exists()


def test_create_private_removes_a_file_it_could_not_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(fd: int) -> None:
        raise _Crash

    monkeypatch.setattr(files.os, "fsync", crash)
    with pytest.raises(_Crash):
        create_private(tmp_path / "pepper", b"value")
    assert not (tmp_path / "pepper").exists()  # the next start creates it again


# --- open_private_append --------------------------------------------------------------------------


def test_open_private_append_creates_0600_and_appends(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "lot.csv"
    for line in (b"one\n", b"two\n"):
        with os.fdopen(open_private_append(path), "ab") as f:
            assert _mode(path) == 0o600
            f.write(line)
    assert path.read_bytes() == b"one\ntwo\n"


def test_open_private_append_makes_an_existing_file_private_first(tmp_path: Path) -> None:
    path = tmp_path / "lot.csv"
    path.write_bytes(b"codes\n")
    path.chmod(0o644)
    fd = open_private_append(path)
    try:
        assert _mode(path) == 0o600  # before anything is appended
        os.write(fd, b"more\n")
    finally:
        os.close(fd)
    assert path.read_bytes() == b"codes\nmore\n"

"""Files readable by their owner only (mode 0600): keys, secrets, live codes, database addresses.

Three ways to write one, for three needs; each sets the mode itself (``fchmod``), whatever the umask,
before a byte of the content is written, so the content is never readable by others, not even briefly:

- :func:`write_private`: replace a file's whole content atomically (temp file in the same folder,
  fsync, rename, fsync of the folder). Readers see the old content or the new one, never a part.
- :func:`create_private`: create a file that must not exist yet (``O_EXCL``); of processes racing to
  create it, exactly one succeeds and the others get ``FileExistsError``.
- :func:`open_private_append`: append to a file (a log, a lot of codes), creating it if absent.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

PRIVATE_MODE = 0o600


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``, mode 0600, atomically and durably.

    The data goes to a new temp file next to ``path`` (created 0600, fsynced), which is then renamed
    over ``path``, and the folder is fsynced. On any failure the temp file is removed and ``path`` keeps
    its old content (or stays absent). A symbolic link at ``path`` is replaced, not followed."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    create_private(tmp, data)  # removes the temp file itself if it fails
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_folder(path.parent)


def create_private(path: Path, data: bytes) -> None:
    """Create ``path`` with ``data``, mode 0600, durably; ``FileExistsError`` if it exists already.

    The creation is exclusive (``O_EXCL``): of processes racing to create ``path``, one writes it and the
    others get ``FileExistsError`` (then read it; it may be empty for an instant while the winner
    writes). If writing fails, the file is removed again and the error raised."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), PRIVATE_MODE)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise


def open_private_append(path: Path) -> int:
    """A file descriptor appending to ``path`` (``O_APPEND``), created if absent; the file is made 0600
    (also when it existed with another mode) before it is returned. The caller owns (closes) it, e.g.
    ``with os.fdopen(open_private_append(path), "ab") as f``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_MODE)
    try:
        os.fchmod(fd, PRIVATE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (its entry is on disk once the folder is fsynced)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

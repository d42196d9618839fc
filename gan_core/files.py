"""Atomic file replacement: a reader sees the old file or the new one, never half of one.

The lowest layer of gan_core (no torch): the dataset cache, checkpoint configs and a run's
`latest` pointer are all written through `atomic_write`.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


def fsync_dir(path: str | Path) -> None:
    """Make a rename inside `path` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def fsync_file(path: str | Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends without error, the file written there
    is flushed to disk and renamed onto `path` (readable with `mode`). On error it is removed and
    `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, mode)
        fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def cache_root(override: str | None = None) -> Path:
    """Where GAN Lab keeps what it can rebuild (decoded datasets, timing choices): `override`, else
    $GANLAB_CACHE, else ~/.cache/ganlab."""
    return Path(override or os.environ.get("GANLAB_CACHE") or "~/.cache/ganlab").expanduser()


def write_text(path: str | Path, text: str) -> None:
    """Replace a text file atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(text)

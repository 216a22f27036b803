"""Outputs written whole or not at all: a temporary file beside the target, renamed into place.

``os.replace`` within one folder is atomic, so a reader (or a later run) sees either the previous
file or the complete new one, never a half-written one; a run that fails leaves the previous
output as it was and removes its temporary file. A symlinked target is written where the link
points (the link stays a link). The new file gets the old file's permissions, or the usual ones
for a new file (0666 less the umask), not the private 0600 of a temporary file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _mode_for(target: Path) -> int:
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def temp_beside(path: Path) -> Path:
    """A new empty temporary file in ``path``'s (resolved) folder, named after it (same suffix)."""
    target = Path(path).resolve()
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=f".tmp{target.suffix}")
    os.close(fd)
    return Path(name)


def commit(temp: Path, path: Path) -> None:
    """Give ``temp`` the target's permissions and rename it onto ``path`` (resolved through links)."""
    target = Path(path).resolve()
    os.chmod(temp, _mode_for(target))
    os.replace(temp, target)


@contextmanager
def replaced(path: Path) -> Iterator[Path]:
    """``with replaced(out) as tmp:`` write ``tmp``; it becomes ``out`` when the block succeeds."""
    temp = temp_beside(path)
    try:
        yield temp
        commit(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    with replaced(path) as temp:
        temp.write_text(text, encoding="utf-8")

"""File destination: each pushed profile update becomes one JSON line in a file.

The embedded default sink, and a way to feed any platform. A batch is appended with a single
``write`` and ``fsync``; if a crash tore the last write, the partial tail line is cut off the
next time the sink opens, and the outbox re-sends that whole batch. Readers fold the lines by
``customer_key`` (last line wins) to get each profile's current properties.

``check()`` (for ``rfm-sync doctor``) proves the folder writable the only sure way — creating and
removing a file of its own there — and opens an existing sink file for appending, writing nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import orjson

from ..base import ConnectorContext, ConnectorSettings, ProfileUpdate, PushResult


class FileSinkSettings(ConnectorSettings):
    type: str = "file"
    path: str = "rfm-profiles.jsonl"
    batch_size: int = 1000
    include_email: bool = True


class FileSink:
    Settings = FileSinkSettings

    def __init__(self, settings: FileSinkSettings, context: ConnectorContext):
        self.settings = settings
        self.name = settings.name
        self.batch_size = settings.batch_size
        self.path = context.resolve_path(settings.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_tail()

    def __repr__(self) -> str:
        return f"FileSink(name={self.name!r}, path={str(self.path)!r})"

    def check(self, online: bool = True) -> list[tuple[str, str]]:
        """For ``rfm-sync doctor`` (no network either way): the sink file can be appended to."""
        folder, table = self.path.parent, "this destination's `path` (relative to the config file's folder)"
        if self.path.is_dir():
            return [(f"{self.path}: is a folder, not a file", f"point {table} at a file")]
        if not folder.is_dir():
            return [(f"{folder}: the sink's folder does not exist", f"create it, or change {table}")]
        try:  # permissions, a read-only mount, a full disk, ACLs: only a real file says for sure
            fd, probe = tempfile.mkstemp(prefix=".rfm-sync-check-", suffix=".tmp", dir=folder)
        except OSError as exc:
            return [
                (
                    f"{folder}: cannot write in the sink's folder ({exc.strerror or exc})",
                    f"give this user write permission on {folder}, or change {table}",
                )
            ]
        os.close(fd)
        os.unlink(probe)
        if self.path.exists():
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_APPEND))  # opened, nothing written
            except OSError as exc:
                return [
                    (
                        f"{self.path}: cannot append to the sink file ({exc.strerror or exc})",
                        f"give this user write permission on {self.path}",
                    )
                ]
        return []

    def _repair_tail(self) -> None:
        """Drop a torn last line (no trailing newline) left by a crash mid-write."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with self.path.open("rb+") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(size - 1)
            if fh.read(1) == b"\n":
                return
            pos = size - 1
            while pos > 0:
                step = min(65536, pos)
                fh.seek(pos - step)
                chunk = fh.read(step)
                idx = chunk.rfind(b"\n")
                if idx >= 0:
                    fh.truncate(pos - step + idx + 1)
                    return
                pos -= step
            fh.truncate(0)

    def line(self, update: ProfileUpdate) -> dict[str, Any]:
        record: dict[str, Any] = {"customer_key": update.customer_key}
        if self.settings.include_email:
            record["email"] = update.email
        record["properties"] = dict(update.properties)
        if update.transition is not None:
            record["transition"] = {"from": update.transition.from_group, "to": update.transition.to_group}
            record["event_id"] = update.event_id
        return record

    def push(self, updates: list[ProfileUpdate]) -> PushResult:
        dumps, sort = orjson.dumps, orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE
        data = b"".join(dumps(self.line(u), option=sort) for u in updates)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        return PushResult(accepted=[u.outbox_id for u in updates])


def read_state(path: os.PathLike[str] | str) -> dict[str, dict[str, Any]]:
    """Fold a sink file into ``customer_key -> properties`` (last line wins)."""
    state: dict[str, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                record = json.loads(line)
                state[record["customer_key"]] = record["properties"]
    return state

"""A file sink that kills its own process at a chosen instant — to test crash safety for real.

``os._exit`` ends the process at once, like SIGKILL: no finally blocks, no rollback handlers.
"""

from __future__ import annotations

import os

from connectors.base import ProfileUpdate, PushResult
from connectors.file.destination import FileSink, FileSinkSettings


class CrashingSinkSettings(FileSinkSettings):
    type: str = "tests.crash_sink:CrashingFileSink"
    # before_write: die on batch N before writing; after_write: write batch N, die before acknowledging;
    # torn_write: write half of batch N's bytes, then die
    crash_mode: str = "after_write"
    crash_on_batch: int = 0  # 0: never crash


class CrashingFileSink(FileSink):
    Settings = CrashingSinkSettings

    def __init__(self, settings, context):
        super().__init__(settings, context)
        self.batches = 0

    def push(self, updates: list[ProfileUpdate]) -> PushResult:
        self.batches += 1
        crash = self.settings.crash_on_batch == self.batches
        mode = self.settings.crash_mode
        if crash and mode == "before_write":
            os._exit(137)
        if crash and mode == "torn_write":
            import json

            data = "".join(json.dumps(self.line(u), sort_keys=True) + "\n" for u in updates).encode()
            with open(self.path, "ab") as fh:
                fh.write(data[: len(data) // 2 + 7])
            os._exit(137)
        result = super().push(updates)
        if crash and mode == "after_write":
            os._exit(137)
        return result

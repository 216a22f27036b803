"""A file sink whose first push waits at a barrier — to make two real processes push at the same time.

Before its first batch the sink creates ``arrived-<pid>`` in ``barrier_dir`` and waits until the
test creates ``go`` there. The test creates ``go`` once every process it started has arrived, has
exited, or has said it is waiting for the store lock: so a process that could push while another
one is pushing is always caught doing it.
"""

from __future__ import annotations

import os
import time

from connectors.base import ProfileUpdate, PushResult
from connectors.file.destination import FileSink, FileSinkSettings


class BarrierSinkSettings(FileSinkSettings):
    type: str = "tests.barrier_sink:BarrierFileSink"
    barrier_dir: str = "barrier"


class BarrierFileSink(FileSink):
    Settings = BarrierSinkSettings

    def __init__(self, settings, context):
        super().__init__(settings, context)
        self.barrier = context.resolve_path(settings.barrier_dir)
        self.waited = False

    def push(self, updates: list[ProfileUpdate]) -> PushResult:
        if not self.waited:
            self.waited = True
            (self.barrier / f"arrived-{os.getpid()}").touch()
            deadline = time.monotonic() + 120  # a safety net only: the test always creates `go`
            while not (self.barrier / "go").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        return super().push(updates)

"""The daemon's log output: JSON lines when stderr is not a terminal (containers, journald), readable
text otherwise. (One-shot commands log through :func:`logging.basicConfig`, see :mod:`rfm_sync.cli`.)

Extra fields given as ``log.info("msg", extra={...})`` become JSON keys (or ``key=value`` in text).
Email addresses in messages and fields are masked (``j***@example.com``, :mod:`rfm_sync.masking`);
fields whose name says they hold a credential are replaced by ``***``. Secrets are
:class:`~rfm_sync.secrets.Secret` objects, whose ``repr`` never shows the value.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from ..masking import mask

SECRET_FIELD = re.compile(r"(secret|token|password|passwd|authorization|api_?key|hmac|signature)", re.I)
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _clean(key: str, value: Any) -> Any:
    if SECRET_FIELD.search(key):
        return "***"
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _clean(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(key, v) for v in value]
    return mask(str(value))


def fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: _clean(k, v) for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": mask(record.getMessage()),
        }
        out.update(fields(record))
        if record.exc_info:
            out["exception"] = mask(self.formatException(record.exc_info))
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%d %H:%M:%S")
        extra = " ".join(f"{k}={json.dumps(v, default=str, ensure_ascii=False)}" for k, v in fields(record).items())
        line = f"{when} {record.levelname:<7} {record.name}: {mask(record.getMessage())}" + (
            f"  {extra}" if extra else ""
        )
        if record.exc_info:
            line += "\n" + mask(self.formatException(record.exc_info))
        return line


def configure(level: str = "INFO", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Replace the root handlers with one writing to ``stream`` (stderr) in the chosen format."""
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not (hasattr(stream, "isatty") and stream.isatty()))
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("apscheduler", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.getLevelName(level), logging.WARNING))

"""What went wrong with the store, in words an operator can act on.

The database driver reports faults as exceptions whose text is meant for developers
(``sqlite3.OperationalError: unable to open database file``, alembic's ``Can't locate revision
identified by '0009'``). :func:`describe` turns each ordinary fault into a :class:`StoreError`
that says what happened, where, and what to do — and keeps the driver's own message, because
that is often the real cause. The CLI prints it as one line with its own exit code.

Every kind below comes from a real fault: a folder or file without write permission, a file
that is not a database, a damaged database, a store migrated by a newer rfm-sync, a full disk, a
store locked by another program for longer than the busy timeout.
"""

from __future__ import annotations

from typing import Any

# (fragment of the driver's message, what it means, what to do)
KINDS: list[tuple[str, str, str]] = [
    (
        "unable to open database file",
        "cannot open or create the store file",
        "check that the folder exists and is writable by this user",
    ),
    (
        "readonly database",
        "the store file is read-only",
        "give this user write permission on the store file and its folder",
    ),
    (
        "file is not a database",
        "the file is not an rfm-sync store (or is damaged)",
        "point [store] url at the right file, or restore it from a backup",
    ),
    (
        "database disk image is malformed",
        "the store file is damaged",
        "restore it from a backup; `rfm-sync doctor` runs an integrity check",
    ),
    (
        "disk is full",
        "the disk holding the store is full",
        "free space on that disk; nothing was half-written (the last transaction was rolled back)",
    ),
    (
        "disk i/o error",
        "the disk holding the store failed to read or write",
        "check the disk; nothing was half-written (the last transaction was rolled back)",
    ),
    (
        "database is locked",
        "another program kept the store locked too long",
        "stop the other program using this store file, then retry",
    ),
    (
        "can't locate revision",
        "the store was written by a newer rfm-sync",
        "upgrade rfm-sync to the version that wrote it (or use a store of this version)",
    ),
    (
        "could not connect to server",
        "cannot reach the database server",
        "check [store] url and that the server is running",
    ),
    ("connection refused", "cannot reach the database server", "check [store] url and that the server is running"),
    (
        "password authentication failed",
        "the database server refused the credentials",
        "check the user and password in [store] url",
    ),
]


class StoreError(Exception):
    """A store fault: ``what`` happened at ``where``; ``hint`` says what to do; ``cause`` is the driver's text."""

    def __init__(self, what: str, *, where: str = "", hint: str = "", cause: str = ""):
        self.what, self.where, self.hint, self.cause = what, where, hint, cause
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"store {self.where}: {self.what}" if self.where else f"store: {self.what}"
        if self.cause:
            text += f" ({self.cause})"
        return text + (f"; {self.hint}" if self.hint else "")


def driver_message(exc: BaseException) -> str:
    """The driver's own message, without SQLAlchemy's statement and parameters (they may hold customer data)."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc)
    return text.splitlines()[0][:300] if text else type(exc).__name__


def describe(exc: BaseException, where: str = "") -> StoreError | None:
    """A :class:`StoreError` for an ordinary store fault, or None when ``exc`` is not one."""
    if isinstance(exc, StoreError):
        return exc
    message = driver_message(exc)
    lowered = message.lower()
    for fragment, what, hint in KINDS:
        if fragment in lowered:
            return StoreError(what, where=where, hint=hint, cause=message)
    if isinstance(exc, PermissionError):
        return StoreError("no permission", where=where, hint="check the folder's and file's permissions", cause=message)
    if isinstance(exc, OSError) and getattr(exc, "errno", None) == 28:
        return StoreError(
            "the disk holding the store is full", where=where, hint="free space on that disk", cause=message
        )
    if isinstance(exc, OSError):  # e.g. the store's folder cannot be created (a file is in the way)
        name = f"{exc.filename}: " if exc.filename else ""
        return StoreError(
            "cannot create the store's folder",
            where=where,
            cause=f"{name}{exc.strerror or exc}",
            hint="check [store] url and the folders on its path",
        )
    return None


def where_of(url: Any) -> str:
    """The store's location for messages: the file of a SQLite URL, else the URL without its password."""
    text = str(url)
    if text.startswith("sqlite:///"):
        return text[len("sqlite:///") :]
    try:
        from sqlalchemy.engine import make_url

        return make_url(text).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: say nothing more than that
        return "(the configured url)"

"""File destination: profile updates as JSON lines in a file (``destination``)."""

from .destination import FileSink

__all__ = ["FileSink"]

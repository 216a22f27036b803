"""CSV source: an orders export, or a shop's own export read through a preset.

``source`` (the connector and its settings), ``scan`` (the DuckDB scan it shares with
``rfm-sync score``: checks, quarantine, the fast typed read), ``file`` (the file as DuckDB is
given it: encoding, header, line numbers, over-long lines, memory), ``presets`` (shops' own
exports folded into the plain layout).

Inside this package ``import csv`` is still the standard library's module: imports are absolute.
"""

from .source import CsvSource

__all__ = ["CsvSource"]

"""Headless Chromium for the report tests: the rendered DOM, a screenshot, and a PNG check (stdlib + numpy).

Chromium is driven by its own command line (``--headless=new --dump-dom`` / ``--screenshot``), no
driver library: the page reports its own script errors, failed loads and ``console.error``
calls in ``data-errors`` and marks each drawn chart ``data-rendered`` (rfm_sync/report_html.py),
which the dumped DOM shows. Chromium's own console lines (``--enable-logging=stderr``) are
returned too, for uncaught errors the page could not see.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


def _run(binary: str, profile: Path, args: list[str], url: str, timeout: float = 180) -> subprocess.CompletedProcess:
    command = [
        binary,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=30000",
        *args,
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def dump_dom(binary: str, page: Path, profile: Path) -> tuple[str, list[str]]:
    """The DOM after the page's scripts ran, and Chromium's console lines."""
    done = _run(binary, profile, ["--dump-dom"], page.resolve().as_uri())
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    if done.returncode != 0 or "<html" not in done.stdout:
        raise AssertionError(f"chromium --dump-dom failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout, console


def screenshot(binary: str, page: Path, out: Path, profile: Path, size: tuple[int, int] = (1280, 1600)) -> Path:
    done = _run(binary, profile, [f"--screenshot={out}", f"--window-size={size[0]},{size[1]}"], page.resolve().as_uri())
    if done.returncode != 0 or not out.is_file():
        raise AssertionError(f"chromium --screenshot failed ({done.returncode}): {done.stderr[-2000:]}")
    return out


class Tags(HTMLParser):
    """Every start tag with its attributes, in document order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    handle_startendtag = handle_starttag


def tags(html_text: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Tags()
    parser.feed(html_text)
    return parser.tags


def png_pixels(path: Path) -> np.ndarray:
    """An 8-bit RGB/RGBA PNG (what Chromium writes) as an array (height, width, channels)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pos, idat, header = 8, bytearray(), None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0, f"unexpected PNG format {header}"
    bpp = 3 if color == 2 else 4
    stride = width * bpp
    raw = np.frombuffer(zlib.decompress(bytes(idat)), dtype=np.uint8).reshape(height, stride + 1)
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int32)
    for y in range(height):
        kind, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        if kind == 0:
            row = line
        elif kind == 1:  # Sub: a running sum per channel
            row = np.cumsum(line.reshape(width, bpp), axis=0).reshape(-1) % 256
        elif kind == 2:  # Up
            row = (line + prev) % 256
        else:  # Average, Paeth: each byte needs the one to its left
            row = _sequential(kind, line.tolist(), prev.tolist(), bpp)
        out[y] = row
        prev = np.asarray(row, dtype=np.int32)
    return out.reshape(height, width, bpp)


def _sequential(kind: int, line: list[int], prev: list[int], bpp: int) -> np.ndarray:
    row = [0] * len(line)
    for i, x in enumerate(line):
        a = row[i - bpp] if i >= bpp else 0
        b = prev[i]
        if kind == 3:
            row[i] = (x + (a + b) // 2) & 255
            continue
        c = prev[i - bpp] if i >= bpp else 0
        p = a + b - c
        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
        row[i] = (x + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    return np.asarray(row, dtype=np.int32)


def not_blank(pixels: np.ndarray) -> tuple[int, float]:
    """(distinct colours, share of pixels unlike the most common colour)."""
    rgb = pixels[:, :, :3].reshape(-1, 3).astype(np.int64)
    codes = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    values, counts = np.unique(codes, return_counts=True)
    return len(values), 1 - counts.max() / len(codes)

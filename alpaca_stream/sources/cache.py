"""--history's pages, kept on disk in the user's cache folder: a second run of the same span
asks Alpaca nothing. A page is kept under its query (the host, the path, every parameter: the
feed, the adjustment and the page token among them), compressed: its rows as the stream's
messages, in msgpack (history.py's Page), which read back into records with the least work. The last page of a query is
kept only once its span has settled (SETTLED after its end): a day not yet over, or data still
coming in, is never kept as if whole; the pages before it are whole as they are."""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile
import zlib
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TypeVar

log = logging.getLogger("alpaca_stream")

Kept = TypeVar("Kept")
SETTLED = timedelta(minutes=15)  # Alpaca's free plan sees SIP data 15 minutes late: until then it may grow
LEVEL = 1  # zlib's quickest: a page of 10,000 trades to a fifth of its size (docs/history.md)


def cache_folder() -> Path:
    """Where the pages are kept: under XDG_CACHE_HOME if set, else the system's cache folder
    (~/.cache on Linux, ~/Library/Caches on macOS, %LOCALAPPDATA% on Windows)."""
    if base := os.environ.get("XDG_CACHE_HOME"):
        root = Path(base)
    elif sys.platform == "win32":
        root = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        root = Path.home() / "Library" / "Caches"
    else:
        root = Path.home() / ".cache"
    return root / "alpaca-stream" / "history"


class PageCache:
    """Pages on disk, by their query; a fault of the disk is told once, and the run goes on
    without keeping (or with what it reads from the network)."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or cache_folder()
        self.told = self.told_damaged = False

    def path(self, url: str, params: dict[str, str]) -> Path:
        asked = url + "?" + "&".join(f"{name}={params[name]}" for name in sorted(params))
        key = hashlib.sha256(asked.encode()).hexdigest()
        return self.folder / key[:2] / f"{key}.msgpack.z"

    def get(self, url: str, params: dict[str, str], read: Callable[[bytes], Kept]) -> Kept | None:
        """The page kept for this query, read(); None if there is none, or if it is damaged
        (read() raises ValueError), which is told once: it is asked again, and kept anew."""
        path = self.path(url, params)
        try:
            return read(zlib.decompress(path.read_bytes()))
        except OSError:
            return None
        except (zlib.error, ValueError) as error:
            if not self.told_damaged:
                self.told_damaged = True
                log.warning("a page kept in %s is damaged (%s):\nasked again, and kept anew", self.folder, error)
            return None

    def keep(self, url: str, params: dict[str, str], page: bytes, last: bool, end: datetime) -> None:
        """Keep a page fetched just now; the last page of its query only if its end has settled."""
        if last and datetime.now(timezone.utc) < end + SETTLED:
            return
        path = self.path(url, params)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as file:  # whole, or not at all
                file.write(zlib.compress(page, LEVEL))
            os.replace(file.name, path)
        except OSError as error:
            if not self.told:
                self.told = True
                log.warning("cannot keep the history's pages in %s:\n%s", self.folder, error.strerror or error)

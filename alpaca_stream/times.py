"""Times as Alpaca writes them in JSON: RFC 3339, with Z or an offset, and up to nanoseconds
("2026-12-05T15:00:00.123456789Z"), which Python's datetime (microseconds; no Z before 3.11)
does not read as they are. Both ends use this: the records, and the local server."""

from __future__ import annotations

import re
from datetime import datetime, timezone

FRACTION = re.compile(r"(\.\d{6})\d+")


def rfc3339(text: str) -> datetime:
    """The time, to the microsecond, in UTC if it names no zone; ValueError if it is not one."""
    when = datetime.fromisoformat(FRACTION.sub(r"\1", text.replace("Z", "+00:00").replace("z", "+00:00")))
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)

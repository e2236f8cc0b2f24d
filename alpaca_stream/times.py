"""Times as Alpaca writes them in JSON: RFC 3339, with Z or an offset, and up to nanoseconds
("2026-12-05T15:00:00.123456789Z"), which Python's datetime (microseconds; no Z before 3.11)
does not read as they are. Both ends use this: the records, and the local server."""

from __future__ import annotations

import re
from datetime import datetime, timezone

FRACTION = re.compile(r"\.(\d+)")


def rfc3339(text: str) -> datetime:
    """The time, to the microsecond, in UTC if it names no zone; ValueError if it is not one."""
    try:
        when = datetime.fromisoformat(text)  # Python 3.11 on: a Z, and any number of digits
    except ValueError:  # 3.10 reads neither, and a fraction of 3 or 6 digits alone
        text = text.replace("Z", "+00:00").replace("z", "+00:00")
        when = datetime.fromisoformat(FRACTION.sub(lambda digits: "." + f"{digits[1]:0<6}"[:6], text))
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)

"""python -m alpaca_stream.server: the local server alone (--help for its options)."""

import asyncio
import contextlib
import sys

from alpaca_stream.server.local import main

with contextlib.suppress(KeyboardInterrupt):  # Ctrl+C is how it stops
    sys.exit(asyncio.run(main()))

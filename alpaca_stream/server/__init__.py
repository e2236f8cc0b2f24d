"""Alpaca's stream protocol, served: the server side written once (protocol.py), with made-up
market data (market.py, crypto.py, options.py, news.py) and an account (trading.py: its
orders and their updates; broker.py: the paper broker's REST API) as the local server for
--demo, the tests and the benchmark (local.py), which answers Alpaca's historical data API
too (history.py: made-up days, paged as Alpaca pages them), or with the data of the script's one
connection to Alpaca, for --serve's clients (relay.py). The facts it follows are in the
project's ../shared/alpaca-stream-protocol.md.

    python -m alpaca_stream.server --port 8765 --rate 50
"""

from alpaca_stream.server.local import AlpacaStreamServer
from alpaca_stream.server.market import CUES, round_lot
from alpaca_stream.server.protocol import ERRORS, FEEDS, ConnectionRecord, Faults, ProtocolServer
from alpaca_stream.server.relay import Relay

__all__ = ["CUES", "ERRORS", "FEEDS", "AlpacaStreamServer", "ConnectionRecord", "Faults", "ProtocolServer",
           "Relay", "round_lot"]

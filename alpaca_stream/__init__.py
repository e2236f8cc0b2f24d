"""The machinery behind websocket_stream.py: Alpaca's real-time market data, pushed to your
handlers. Data flows one way, and the folders say so:

    sources/     where records come from, a module each: Alpaca's stock stream (stocks.py),
                 crypto stream (crypto.py) and news stream (news.py), the demo (demo.py:
                 the local server's made-up data, through the same streams), a NATS
                 server a feeder publishes to (nats.py), a recording (recording.py), past
                 days of Alpaca's historical data (history.py, its pages kept on disk by
                 cache.py), the last two through a backtest of the orders your handlers
                 place (backtest.py)
    records.py   what each kind of message holds
    handlers.py  records to your handlers, in order; in_background()
    testing.py   run_handlers(): your handlers on your messages, for your tests
    orders.py    trading_client(): orders from a handler, to the run's account
    outputs/     where they go from there: the terminal (terminal.py), a NATS server
                 (nats.py), your other bots through --serve (serve.py), a page in the
                 browser (chart.py, --chart), a backtest's report (report.py, --report)

Beside them, what a source stands on: connection.py (one websocket to Alpaca, through
alpaca-py) and reconnect.py (the wrapper that opens it again after every fault);
subscriptions.py (what a stream asks for, subscribe() from a handler, and Alpaca's answers to
it, its errors among them); channels.py (Alpaca's channels, for both ends); nats_common.py
(what both NATS ends share). What a run is told and tells: keys.py (your keys), errors.py (what
ends a run and what is retried: one policy for every source), session.py (what a run counts:
the summary, --heartbeat), calendar.py (the market's trading days and hours), span.py
(--history's days or times), result.py (a backtest's result: P&L, drawdown), booking.py (a
position's fills at average cost, for the account and the chart), logs.py (the log, within 80
columns). Over all of them:
supervisor.py (sources side by side in one event loop), options.py (the command line's options)
and cli.py (the command: Ctrl+C and SIGTERM, exit statuses). And server/: the server side of
Alpaca's protocol, written once, with made-up data and a paper broker as the local server
(--demo, the tests) or with this script's data for --serve's clients; its broker on a
recording's clock is a backtest's (server/backtest.py, its fill model in server/fills.py); the
local server answers Alpaca's historical data API too, with made-up days (server/history.py).

What a bot uses is here, one import away:

    from alpaca_stream import Trade, show, in_background, subscribe, run_handlers, trading_client
"""

from alpaca_stream.cli import CommandLine
from alpaca_stream.handlers import Handler, Handlers, in_background
from alpaca_stream.keys import Keys, check_keys, load_keys
from alpaca_stream.orders import trading_client
from alpaca_stream.outputs.terminal import show
from alpaca_stream.records import (
    Bar,
    Book,
    CryptoBar,
    CryptoDailyBar,
    CryptoQuote,
    CryptoTrade,
    CryptoUpdatedBar,
    DailyBar,
    Luld,
    News,
    OptionQuote,
    OptionTrade,
    Order,
    Orderbook,
    OrderImbalance,
    Quote,
    Record,
    Trade,
    TradeCancel,
    TradeCorrection,
    TradeUpdate,
    TradingStatus,
    UpdatedBar,
)
from alpaca_stream.session import Session
from alpaca_stream.sources.crypto import CryptoStream
from alpaca_stream.sources.news import NewsStream
from alpaca_stream.sources.options import OptionStream
from alpaca_stream.sources.stocks import StockStream
from alpaca_stream.sources.trading import TradingUpdates
from alpaca_stream.subscriptions import subscribe, unsubscribe
from alpaca_stream.supervisor import stream
from alpaca_stream.testing import HandlersFailed, run_handlers

__all__ = [
    "Bar", "Book", "CommandLine", "CryptoBar", "CryptoDailyBar", "CryptoQuote", "CryptoStream", "CryptoTrade",
    "CryptoUpdatedBar", "DailyBar", "Handler", "Handlers", "HandlersFailed", "Keys", "Luld", "News",
    "NewsStream", "OptionQuote", "OptionStream", "OptionTrade", "Order", "OrderImbalance", "Orderbook",
    "Quote", "Record", "Session", "StockStream", "Trade", "TradeCancel", "TradeCorrection", "TradeUpdate",
    "TradingStatus", "TradingUpdates", "UpdatedBar", "check_keys", "in_background", "load_keys",
    "run_handlers", "show", "stream", "subscribe", "trading_client", "unsubscribe",
]

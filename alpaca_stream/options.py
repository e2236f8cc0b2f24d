"""The command line's options: what each means, every check of them (a bad one exits 2 with
what is wrong), and the Settings they make for a run."""

from __future__ import annotations

import argparse
import difflib
import ipaddress
import logging
import math
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

from alpaca_stream.calendar import HISTORY_FROM, NEW_YORK, OPTIONS_FROM
from alpaca_stream.channels import (
    ALPACA_CHANNELS,
    CHANNELS,
    CRYPTO_CHANNELS,
    CRYPTO_PATH,
    NEWS_PATH,
    OPTION,
    OPTION_CHANNELS,
    OPTION_FEEDS,
    OPTIONS_PATH,
    PAIR,
    SAID,
    SYMBOL,
    option_symbol,
)
from alpaca_stream.errors import EXIT_USAGE
from alpaca_stream.logs import fitted
from alpaca_stream.orders import LIVE_API, PAPER_API, Costs
from alpaca_stream.outputs.report import unwritable
from alpaca_stream.outputs.serve import is_loopback
from alpaca_stream.sources.crypto import ALPACA_CRYPTO_STREAM
from alpaca_stream.sources.demo import warn_of_unknown
from alpaca_stream.sources.news import ALPACA_NEWS_STREAM
from alpaca_stream.sources.options import ALPACA_OPTIONS_STREAM
from alpaca_stream.sources.stocks import ALPACA_STREAM, DEFAULT_SYMBOLS, FEEDS, TEST_STREAM_SYMBOL
from alpaca_stream.span import read_span

log = logging.getLogger("alpaca_stream")

# --data-timeout's default: in market hours, a stream with no data for this long is replaced.
# A stream can stay connected, answer pings and send nothing (alpaca-py issue 740: 19 minutes at
# the open); 5 minutes catches that, and is far beyond the gaps of a symbol traded all day.
DATA_TIMEOUT = 300.0
# The channels that bring data all through market hours; statuses, LULD bands, updated bars and
# imbalances can be silent all day, so alone they arm no --data-timeout.
STEADY_CHANNELS = ("trades", "quotes", "bars", "dailyBars")
# BTCUSD, as news and some exchanges write BTC/USD: a US stock's symbol has five letters at most.
UNSLASHED_PAIR = re.compile(r"([A-Z]{3,6})(USD|USDT|USDC|BTC)")
# What each URL option takes: its schemes, and whether a path may follow the host (--url's is
# the stock stream's; the others name a server alone).
URL_OPTIONS = {"url": (("ws", "wss"), True), "trading_url": (("http", "https"), False),
               "publish": (("nats", "tls"), False), "source": (("nats", "tls"), False)}
MOST_REPLICAS = 5  # JetStream's most replicas of a stream
HOST = re.compile(r"[\w.-]+")  # a name (in any letters) or an IPv4 address; an IPv6 one goes in [ ]
# The channels Alpaca's historical data API keeps none of, and why (--history refuses them).
NO_HISTORY = {"statuses": "trading halts", "lulds": "LULD bands", "imbalances": "order imbalances",
              "orderbooks": "crypto order books (the latest only)",
              "updatedBars": "updated bars (its bars are final, late trades in)",
              "dailyBars": "daily bars each minute (one a day, at its end)"}
# What else --history cannot go with, and why (--serve, --live, --trading-url and --trade-updates:
# with --replay's reasons, below).
NOT_WITH_HISTORY = {"replay": "one past at a time: Alpaca's, or a recording",
                    "source": "the history is Alpaca's, not a NATS server's",
                    "test_stream": "Alpaca's test stream keeps no history"}


@dataclass
class Settings:
    """What a run is asked to do: the options, checked and resolved (a URL for --feed, say)."""

    url: str
    symbols: list[str]  # stocks
    channels: list[str] = field(default_factory=lambda: ["trades"])  # Alpaca's names
    pairs: list[str] = field(default_factory=list)  # crypto, from crypto_url
    crypto_url: str = ALPACA_CRYPTO_STREAM
    options: list[str] = field(default_factory=list)  # option contracts, from options_url
    options_url: str = ALPACA_OPTIONS_STREAM
    news_url: str = ALPACA_NEWS_STREAM  # with the channel "news"
    demo: bool = False  # from a local server started here, not from Alpaca
    heartbeat: float = 0.0  # seconds between two "alive" lines in the log; 0: none
    data_timeout: float = 0.0  # seconds without data, in market hours, before a new connection; 0: never
    market_hours: bool = True  # False: data is due at any hour (--demo, the test stream)
    publish: str = ""  # a NATS server to publish every message to (outputs/nats.py)
    source: str = ""  # a NATS server to read from, instead of Alpaca
    durable: str = ""  # with source: a name to resume from where it stopped (JetStream)
    nats_creds: str = ""  # with publish or source: a NATS credentials file
    nats_ca: str = ""  # and the authority of the NATS servers' TLS certificates
    replicas: int = 0  # the JetStream stream's; 0: the default (nats_common.keep_stream())
    replay: str | None = None  # a file of --json lines to read, instead of Alpaca
    replay_speed: float = 0.0  # with replay: times the recorded pace; 0: as fast as it goes
    fills: str | None = None  # with replay: a CSV file to write its backtest's fills to
    report: str | None = None  # with replay or history: an HTML file to write its backtest's report to
    serve: tuple[str, int] | None = None  # a host and port to serve Alpaca's protocol on
    chart: tuple[str, int] | None = None  # a host and port to serve the chart's page on (outputs/chart.py)
    trade_updates: bool = False  # the account's order updates, from the trading API at trading_url
    trading_url: str = PAPER_API  # its base: https://HOST (its stream at /stream, its REST under /v2/)
    costs: Costs = field(default_factory=Costs)  # with replay or history: the backtest's cash, latency, ...
    history: tuple[datetime, datetime] | None = None  # the past to read from Alpaca's history: first, last moment
    history_url: str = ""  # its historical data API: --url's host over http(s); "" for Alpaca's (or the demo's)
    cache: bool = True  # with history: its pages kept on disk, and read from there
    feed: str = "iex"  # the stocks' feed (--feed), for the history's queries (the stream's is in its URL)


def parse_args(argv: list[str] | None, doc: str | None = None) -> argparse.Namespace:
    """The options, checked: a bad one exits 2 with argparse's usage and what is wrong. doc: the
    script's docstring, whose exit statuses end --help."""
    parser = ArgumentParser(
        # Not argparse's usage, which keeps the line of --test-stream | --url ... whole: 99 columns.
        usage="%(prog)s [SYMBOL ...] [options]",
        description="Stream live market data from Alpaca: a line per message on stdout,\nCtrl+C to stop.",
        epilog=doc[doc.find("exit statuses"):] if doc else None, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("symbols", nargs="*", metavar="SYMBOL",
                        help="stocks (default: SPY TSLA; '*', quoted, for every one), crypto pairs "
                        "as BTC/USD (at any hour), and options as AAPL261218C00250000")
    channels = parser.add_argument_group("channels (trades unless you name others)")
    channels.add_argument("--trades", action="store_true", help="trades, with their corrections and cancels")
    channels.add_argument("--quotes", action="store_true", help="best bid and ask")
    channels.add_argument("--bars", action="store_true", help="minute bars")
    channels.add_argument("--updated-bars", action="store_true", help="minute bars changed by late trades")
    channels.add_argument("--daily-bars", action="store_true", help="the day's bar, every minute")
    channels.add_argument("--statuses", action="store_true", help="trading halts and resumptions")
    channels.add_argument("--lulds", action="store_true", help="limit up / limit down price bands")
    channels.add_argument("--imbalances", action="store_true", help="order imbalances (around auctions)")
    channels.add_argument("--orderbooks", action="store_true", help="crypto: each pair's order book, "
                          "the levels that change")
    channels.add_argument("--news", action="store_true", help="news articles about the symbols ('*': all)")
    channels.add_argument("--trade-updates", action="store_true", help="your account's order updates (paper "
                          "unless --live), from the trading API with your keys: not through --source")
    parser.add_argument("--feed", choices=FEEDS, help="iex (free plan, default), sip (paid) or delayed_sip")
    parser.add_argument("--options-feed", choices=OPTION_FEEDS, help="indicative (free plan, default) "
                        "or opra (paid)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--test-stream", action="store_true", help=f"Alpaca's always-on test stream "
                       f"({TEST_STREAM_SYMBOL}): data even when the market is closed")
    where.add_argument("--url", help="another endpoint (a proxy, a local server), ws:// or wss://: "
                       "the stock stream's, or a host alone (ws://HOST:PORT) for each stream at Alpaca's path")
    where.add_argument("--demo", action="store_true", help="no keys, no network: demo data from a local server")
    where.add_argument("--source", metavar="NATS_URL", help="read from a NATS server that a --publish feeder "
                       "publishes to, instead of Alpaca (no keys needed)")
    where.add_argument("--replay", metavar="FILE", help="read a recording of --json lines "
                       "(--json > FILE) instead of Alpaca, into the same handlers "
                       "(no keys needed)")
    parser.add_argument("--replay-speed", type=float, metavar="N", help="with --replay: N times "
                        "the recorded pace (1: as recorded); default: as fast as it goes")
    parser.add_argument("--history", metavar="SPAN", help="read past days from Alpaca's historical data "
                        "instead of the stream, as --replay reads a recording: a day (2026-12-01), days "
                        "(2026-12-01..2026-12-03) or a time range (2026-12-01T14:30..15:00 in UTC; "
                        "2026-12-01T09:30NY..10:00 in New York's time); docs/history.md")
    parser.add_argument("--no-cache", action="store_true", help="with --history: ask Alpaca again, and keep "
                        "nothing on disk")
    backtest = parser.add_argument_group("a backtest (--replay or --history with handlers that place orders)")
    backtest.add_argument("--cash", type=float, metavar="DOLLARS",
                          help=f"the account's cash to start with (default {Costs.cash:,.0f})")
    backtest.add_argument("--latency", type=float, metavar="MS", help="an order reaches the market this "
                          f"much later, in the recording's time (default {Costs.latency * MS_PER_S:g})")
    backtest.add_argument("--slippage", type=float, metavar="BPS", help="fills worse by so many basis "
                          f"points, never beyond a limit (default {Costs.slippage_bps:g})")
    backtest.add_argument("--fee-bps", type=float, metavar="BPS", help="a fee on each fill's value, in "
                          f"basis points, from the cash (default {Costs.fee_bps:g})")
    backtest.add_argument("--fills", metavar="FILE.csv", help="write each fill of the backtest to "
                          "FILE.csv as it happens")
    backtest.add_argument("--report", metavar="FILE.html", help="at the end, write the backtest's report to "
                          "FILE.html: the prices with your fills, equity, the summary (docs/chart.md)")
    parser.add_argument("--publish", metavar="NATS_URL", help="also publish every message to a NATS server, "
                        "for more bots on one Alpaca connection: nats://127.0.0.1:4222 (a cluster's: "
                        "nats://HOST1:4222,nats://HOST2:4222,...)")
    parser.add_argument("--nats-creds", metavar="FILE", help="with --publish or --source: a NATS credentials file")
    parser.add_argument("--nats-ca", metavar="FILE", help="with --publish or --source: the certificate "
                        "authority of the NATS servers' TLS certificates (tls://), if not the system's")
    parser.add_argument("--replicas", type=int, metavar="N", help="with --publish or --source: the JetStream "
                        "stream kept on N servers of the cluster (default 3 on a cluster, 1 on a single server)")
    parser.add_argument("--serve", metavar="[HOST:]PORT",
                        help="also serve Alpaca's stream to your other bots, unchanged, on "
                        "this one connection (HOST: 127.0.0.1 unless named)")
    parser.add_argument("--chart", metavar="[HOST:]PORT", nargs="?", const="0",
                        help="also chart the prices, your fills and P&L on a page for your browser "
                        "(HOST: 127.0.0.1, PORT: any free one, unless named)")
    parser.add_argument("--durable", metavar="NAME", help="with --source: resume where the bot of this name "
                        "stopped, missing nothing (needs nats-server -js)")
    parser.add_argument("--live", action="store_true", help="your live account (real money), not the paper "
                        "one: for --trade-updates and trading_client()'s orders")
    parser.add_argument("--trading-url", metavar="URL", help="another trading API, http(s)://HOST:PORT (its "
                        "stream at /stream): for --trade-updates and trading_client()'s orders")
    parser.add_argument("--json", action="store_true", help="one JSON object per message per line")
    parser.add_argument("--quiet", action="store_true", help="print no messages (the handlers still get them)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging: each step of connecting")
    parser.add_argument("--heartbeat", type=float, default=0.0, metavar="SECONDS",
                        help="an 'alive' line in the log every so often (for a server)")
    parser.add_argument("--data-timeout", type=float, metavar="SECONDS",
                        help=f"in market hours (crypto: at any hour), replace a stream with no data for this long "
                        f"(default {DATA_TIMEOUT:.0f}; 0: never)")
    parser.add_argument("--log-format", choices=("text", "json"), default="text",
                        help="json: one object per log line on stderr, for log collectors")
    given = sys.argv[1:] if argv is None else argv
    args = parser.parse_intermixed_args(given)  # symbols after options too: SPY --quotes TSLA
    # '' names the folder, which exists: said here, not taken below for what the shell made of *
    for blank in (symbol for symbol in args.symbols if not symbol.strip()):
        parser.error(f"a symbol is empty ({shlex.quote(blank)}): leave it out, or name one, as SPY")
    if args.symbols and all(Path(name).exists() for name in args.symbols) and \
            not all(SYMBOL.fullmatch(name.upper()) for name in args.symbols):
        parser.error("the shell expanded * into the file names here: quote it, '*'")
    args.symbols = list(dict.fromkeys(symbol.upper() for symbol in args.symbols))
    bad = [symbol for symbol in args.symbols
           if not (SYMBOL.fullmatch(symbol) or PAIR.fullmatch(symbol) or OPTION.fullmatch(symbol))]
    if any("," in symbol for symbol in bad):
        parser.error(f"separate symbols with spaces, not commas: {' '.join(' '.join(bad).replace(',', ' ').split())}")
    if bad:
        parser.error(f"not a stock symbol, nor a crypto pair as BTC/USD,\nnor an option as "
                     f"AAPL261218C00250000: {', '.join(bad)}")
    args.options = [symbol for symbol in args.symbols if OPTION.fullmatch(symbol)]
    for contract in args.options:
        if why := option_fault(contract):
            parser.error(f"{contract} is not an option:\n{why}")
    args.pairs = [symbol for symbol in args.symbols if "/" in symbol]
    args.symbols = [symbol for symbol in args.symbols if "/" not in symbol and symbol not in args.options]
    for option, (schemes, path) in URL_OPTIONS.items():
        url = getattr(args, option)
        for one in [] if url is None else url.split(",") if "nats" in schemes else [url]:  # NATS: a cluster's
            if fault := url_fault(one, schemes, path):
                named = "" if one == url else f" (in {shlex.quote(url)})"
                parser.error(f"--{option.replace('_', '-')} {shlex.quote(one)}{named}: {fault}")
    nats_checks(parser, args)
    host_alone = bool(args.url) and urlsplit(args.url).path in ("", "/")
    if args.pairs or args.news or args.options:
        other_markets_checks(parser, args, host_alone)
    for option, seconds in (("--heartbeat", args.heartbeat), ("--data-timeout", args.data_timeout)):
        if seconds is not None and not 0 <= seconds < math.inf:
            parser.error(f"{option} takes a number of seconds, 0 or more")
    if args.feed and (args.demo or args.url and not host_alone or args.test_stream or args.source):
        parser.error("--feed picks one of Alpaca's feeds: it has no effect with --demo, --url with a path, "
                     "--test-stream or --source")
    if args.publish and args.source:
        parser.error("--publish and --source: one feeder publishes, the bots read (--source)")
    if args.serve is not None:
        args.serve = serve_address(parser, args.serve, keyless=args.demo or bool(args.source))
        if args.replay is not None or args.history is not None:
            parser.error("--serve goes with a stream (Alpaca, --url, --demo or --source),\n"
                         "not with --replay or --history")
    if args.chart is not None:  # beyond this machine, the page asks for a token: any run may
        if ":" not in args.chart and not args.chart.isdigit():  # a symbol, taken for the port
            parser.error(f"--chart takes [HOST:]PORT or nothing, not {shlex.quote(args.chart)}: put the symbols "
                         f"before it, or --chart last\n(python websocket_stream.py {chart_last(given, args.chart)})")
        args.chart = serve_address(parser, args.chart, keyless=False, option="--chart")
    if args.durable is not None and not args.source:
        parser.error("--durable NAME goes with --source")
    if args.durable is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", args.durable):
        parser.error("--durable takes a name of letters, digits, - and _")
    chosen = args.symbols or args.pairs or args.options or args.feed or args.options_feed or \
        args.trade_updates or any(getattr(args, option) for option in CHANNELS)
    if args.replay is not None and chosen:
        parser.error("--replay plays the recording as it is:\n"
                     "symbols, channel options and --feed have no effect with it")
    if args.replay_speed is not None and args.replay is None:
        parser.error("--replay-speed goes with --replay FILE")
    if args.no_cache and args.history is None:
        parser.error("--no-cache goes with --history SPAN: its pages are what is kept")
    if args.replay is None and args.history is None:
        for option, why in WITH_REPLAY.items():
            if getattr(args, option) is not None:
                parser.error(f"--{option.replace('_', '-')} goes with --replay FILE or --history SPAN{why}")
    if args.replay_speed is not None and not 0 < args.replay_speed < math.inf:
        parser.error("--replay-speed takes a number above 0:\n"
                     "1 is the recorded pace, 2 twice as fast")
    backtest_checks(parser, args)
    if args.report is not None:
        report_checks(parser, args.report, args.replay, args.fills)
    # Trades unless channels are named; --trade-updates alone streams the order updates alone.
    args.channels = [name for option, name in CHANNELS.items() if getattr(args, option)] or (
        [] if args.trade_updates else ["trades"])
    trading_checks(parser, args)
    args.history_span = None if args.history is None else history_checks(parser, args, host_alone)
    if args.orderbooks and not args.pairs:
        parser.error("--orderbooks is a crypto channel: name a pair, as BTC/USD")
    stock_channels = any(channel in ALPACA_CHANNELS for channel in args.channels)
    if args.symbols and not args.news and not stock_channels:
        parser.error(f"--orderbooks is crypto's alone: name a channel for {', '.join(args.symbols)} too, "
                     "as --trades")
    if args.feed and not (stock_channels and (args.symbols or not (args.pairs or args.options))):
        parser.error("--feed picks the stock stream's feed, and this run streams no stocks: leave it out")
    if args.options_feed and not args.options:
        parser.error("--options-feed picks the options stream's feed, and this run streams no options:\n"
                     "leave it out")
    if args.options_feed and (args.demo or args.source or args.url and not host_alone):
        parser.error("--options-feed picks one of Alpaca's feeds:\n"
                     "it has no effect with --demo, --source or --url with a path")
    return args


def other_markets_checks(parser: argparse.ArgumentParser, args: argparse.Namespace, host_alone: bool) -> None:
    """What crypto pairs, options and the news cannot go with: a --url that is the stock
    stream's alone, Alpaca's test stream (of stocks), a channel that no market of the run has,
    and a market that would get nothing."""
    what = ", ".join(args.pairs + args.options) or "the news"
    if args.url and not host_alone:
        parser.error(f"--url {args.url} has a path, so it is taken as the stock stream's; for {what}, "
                     "give the host alone (ws://HOST:PORT): each stream at Alpaca's path on it")
    if args.test_stream:
        parser.error(f"--test-stream is Alpaca's test stream of stocks (FAKEPACA):\nstream {what} without it")
    stocks = bool(args.symbols) or not (args.pairs or args.options)  # else SPY and TSLA, by default
    option_channels = (*OPTION_CHANNELS, "bars") if args.history else OPTION_CHANNELS  # Alpaca keeps their bars
    taken = {*(ALPACA_CHANNELS if stocks else ()), *(CRYPTO_CHANNELS if args.pairs else ()),
             *(option_channels if args.options else ()), "news"}
    named = {option: name for option, name in CHANNELS.items() if getattr(args, option)}
    untaken = [option.replace("_", "-") for option, name in named.items() if name not in taken]
    if untaken:
        channel = named[untaken[0].replace("-", "_")]
        takers = "a pair" if channel == "orderbooks" else "a stock or a pair" if channel in CRYPTO_CHANNELS \
            else "a stock"
        parser.error(f"--{untaken[0]}: not a channel of {what};\nname {takers} to stream it for")
    # A pair's news comes with --news; an option's does not (the news is about stocks and coins).
    for market, contracts, channels, example in (("a crypto", args.pairs, (*CRYPTO_CHANNELS, "news"), "--trades"),
                                                 ("an options", args.options, option_channels, "--trades or --quotes")):
        if contracts and named and not any(name in channels for name in named.values()):
            kind = f"is not {market} channel" if len(named) == 1 else f"are not {market.split()[1]} channels"
            said = ", ".join(SAID[name] for name in named.values())
            parser.error(f"{', '.join(contracts)} would get nothing:\n{said} {kind};\n"
                         f"name {market} channel too, as {example}")


MS_PER_S = 1000.0  # --latency is in milliseconds, Costs.latency in seconds


@dataclass(frozen=True)
class CostOption:
    """A backtest's option: the field of Costs it sets (its value divided by per, for the
    field's unit), its range, and what it is said to take."""

    field: str
    low: float
    high: float
    low_taken: bool
    said: str
    per: float = 1.0


# A backtest's options, by their names in args (--fee-bps: fee_bps).
COSTS = {"cash": CostOption("cash", 0.0, math.inf, False, "a number of dollars above 0"),
         "latency": CostOption("latency", 0.0, math.inf, True, "a number of milliseconds, 0 or more", MS_PER_S),
         "slippage": CostOption("slippage_bps", 0.0, 1000.0, True, "a number of basis points from 0 to 1000"),
         "fee_bps": CostOption("fee_bps", 0.0, 1000.0, True, "a number of basis points from 0 to 1000")}
# The options of a backtest, which go with --replay FILE or --history SPAN alone, and why.
WITH_REPLAY = {"fills": ": the fills of its backtest", "report": ": the report of its backtest",
               **dict.fromkeys(COSTS, ": it is a backtest's")}


def backtest_checks(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--cash, --latency, --slippage and --fee-bps: each a number in its range."""
    for option, cost in COSTS.items():
        value = getattr(args, option)
        if value is None:
            continue
        if not (cost.low <= value if cost.low_taken else cost.low < value) or not value <= cost.high \
                or value == math.inf:
            parser.error(f"--{option.replace('_', '-')} takes {cost.said}")


def report_checks(parser: argparse.ArgumentParser, path: str, replay: str | None, fills: str | None) -> None:
    """--report's file, written at the run's end: in a folder that is there and may be written
    to, not a folder itself, nor the recording or --fills' file, which it would overwrite."""
    report, folder = Path(path), Path(path).parent
    if report.is_dir():
        parser.error(f"--report {path} is a folder: name the file to write, as {report / 'report.html'}")
    if not folder.is_dir():
        parser.error(f"--report {path}: there is no folder {folder}")
    for other, option in ((replay, "--replay"), (fills, "--fills")):
        if other is not None and os.path.realpath(other) == os.path.realpath(path):
            parser.error(f"--report {path} is {option}'s file: it would be overwritten")
    if not os.access(folder, os.W_OK) or report.exists() and not os.access(report, os.W_OK):
        parser.error(f"--report: cannot write {path}: permission denied")
    if why := unwritable(report):
        parser.error(f"--report: cannot write {path}: {why}")


def costs_from(args: argparse.Namespace) -> Costs:
    """The backtest's Costs: those of the options given, Costs' defaults for the others."""
    return Costs(**{cost.field: getattr(args, option) / cost.per
                    for option, cost in COSTS.items() if getattr(args, option) is not None})


def trading_checks(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--trade-updates and where the run trades (--live or --trading-url: for the updates and
    trading_client()'s orders), your keys, a channel for any symbol named beside it."""
    played = args.replay is not None or args.history is not None
    for option in ("live", "trading_url"):
        if getattr(args, option) and (args.source or played):
            parser.error(f"--{option.replace('_', '-')} says where orders go: --source trades nowhere, "
                         "and --replay or --history in a backtest of its own")
    if args.trade_updates and (args.source or played):
        parser.error("--trade-updates needs your keys and the trading API:\n"
                     "not --source, --replay or --history (a backtest hands over its own)")
    if args.live and (args.demo or args.trading_url):
        parser.error("--live is Alpaca's live account: not with --demo or --trading-url")
    if args.trading_url and args.demo:
        parser.error("--trading-url: --demo has a trading API of its own")
    named = args.symbols + args.pairs + args.options
    if named and not args.channels and not args.news:
        parser.error(f"{', '.join(named)} would get nothing: --trade-updates alone\n"
                     "streams the order updates; name a channel too, as --trades")


def history_checks(parser: argparse.ArgumentParser, args: argparse.Namespace, host_alone: bool) -> \
        tuple[datetime, datetime]:
    """--history: what it cannot go with, the channels Alpaca keeps no history of; its span,
    read (span.py), the first and the last moment its queries ask."""
    for option, why in NOT_WITH_HISTORY.items():
        if getattr(args, option):
            parser.error(f"--history and --{option.replace('_', '-')}: {why}")
    if args.url and not host_alone:
        parser.error(f"--history reads the historical data API on --url's host: give the host alone, "
                     f"{urlsplit(args.url).scheme}://{urlsplit(args.url).netloc}")
    if "*" in args.symbols + args.pairs:
        parser.error("--history: name the symbols: Alpaca's historical data has no '*'")
    for channel, what in NO_HISTORY.items():
        if channel in args.channels:
            option = next(option for option, name in CHANNELS.items() if name == channel).replace("_", "-")
            parser.error(f"--history: Alpaca keeps no history of {what}: leave out --{option}")
    if args.options and "quotes" in args.channels:
        parser.error("--history: Alpaca keeps no history of option quotes (of options, trades and bars): "
                     "leave out --quotes, or the options")
    if args.options_feed:
        parser.error("--options-feed picks the options stream's feed; Alpaca's option history has none: "
                     "leave it out")
    stocks = bool(args.symbols) or not (args.pairs or args.options)  # else SPY and TSLA, by default
    try:
        begins = (OPTIONS_FROM, "Alpaca's option history") if args.options else (HISTORY_FROM, "Alpaca's history")
        return read_span(args.history, new_york=stocks or bool(args.options), every_day=bool(args.pairs) or args.news,
                         begins=begins)
    except ValueError as error:
        parser.error(str(error))


def option_fault(contract: str) -> str:
    """What is wrong with an option symbol of the right shape (OCC's: root, yymmdd, C or P, the
    strike times 1000): an expiry that is not a date, a strike of 0; "" if nothing is."""
    option = option_symbol(contract)
    try:
        option.expires()
    except ValueError:
        return f"its expiry, {option.expiry}, is not a date (yymmdd)"
    return "its strike (the last 8 digits) is 0" if option.strike == 0 else ""


def nats_checks(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--nats-creds, --nats-ca and --replicas: with --publish or --source, files that exist, a
    number of replicas that JetStream takes."""
    for option in ("nats_creds", "nats_ca", "replicas"):
        named = f"--{option.replace('_', '-')}"
        if getattr(args, option) is not None and not (args.publish or args.source):
            parser.error(f"{named} goes with --publish or --source")
        if option != "replicas" and getattr(args, option) is not None and not Path(getattr(args, option)).is_file():
            parser.error(f"{named} {shlex.quote(getattr(args, option))}: no such file")
    if args.replicas is not None and not 1 <= args.replicas <= MOST_REPLICAS:
        parser.error(f"--replicas takes a number from 1 to {MOST_REPLICAS}: JetStream keeps at most {MOST_REPLICAS}")


def url_fault(url: str, schemes: tuple[str, ...], path: bool = False, listening: bool = False) -> str:
    """What is wrong with url, for an option that takes these schemes (and a path after the
    host, if path); "" if nothing. Checked before any connection, which would take these faults
    for the network's and retry for ever. listening: the address of a server of ours (--serve),
    where port 0 means any free port; a server to connect to has none."""
    if not url.startswith(tuple(f"{scheme}://" for scheme in schemes)):
        return "it must start with " + " or ".join(f"{scheme}://" for scheme in schemes)
    if any(character.isspace() for character in url):
        return "it has a space"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        if host and "[" in parts.netloc:
            ipaddress.IPv6Address(host)  # Python 3.10's urlsplit() does not check it
    except ValueError:  # a [ without its ], or no IPv6 address in them
        return "an IPv6 address goes whole in brackets, as [::1]"
    try:
        parts.port  # noqa: B018  (a port that is not a number of 0 to 65535 raises ValueError)
    except ValueError:
        return "its port is not a number from 0 to 65535"
    if parts.port == 0 and not listening:
        return "its port is 0: a server's port is a number from 1 to 65535"
    if not host:
        return f"it has no host: {schemes[0]}://HOST:PORT"
    if "[" not in parts.netloc and not HOST.fullmatch(host):
        return f"its host, {host}, is not a name or an address"
    if parts.fragment:
        return "it has a #fragment, which means nothing to a server"
    if not path and (parts.path not in ("", "/") or parts.query):
        return f"the server alone, as {schemes[0]}://HOST:PORT: no path after it"
    return ""


def chart_last(given: list[str], symbol: str) -> str:
    """The command line given, with the symbol that --chart took for its address left where it
    is, and --chart moved last, where nothing follows it to be taken."""
    at = next((index for index, arg in enumerate(given) if arg == f"--chart={symbol}"
               or arg == symbol and index and given[index - 1] == "--chart"), None)
    if at is None:  # --chart written shorter, as argparse allows: the gist
        return shlex.join([symbol, "--chart"])
    return shlex.join([*given[:at - (given[at] == symbol)], symbol, *given[at + 1:], "--chart"])


def serve_address(parser: argparse.ArgumentParser, address: str, keyless: bool,
                  option: str = "--serve") -> tuple[str, int]:
    """--serve's [HOST:]PORT (or --chart's). Another address than this machine's own (loopback)
    only where the clients must log in with the script's keys: not with --demo or --source,
    which have none."""
    host, _, port = address.rpartition(":")
    if ":" in host and not host.startswith("["):  # ::1:8765, as [::1]:8765
        host = f"[{host}]"
    url = f"ws://{host or '127.0.0.1'}:{port}"
    if not port:
        parser.error(f"{option} takes [HOST:]PORT: no port in {shlex.quote(address)}")
    if fault := url_fault(url, ("ws",), listening=True):
        parser.error(f"{option} {shlex.quote(address)}: {fault}")
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None  # as url_fault() found
    try:
        loopback = is_loopback(parts.hostname)
    except ValueError:
        parser.error(f"{option} takes an IP address, or localhost: {parts.hostname}")
    if not loopback and keyless:
        parser.error(f"{option} {address}: with --demo or --source, clients need no "
                     "keys, so only this machine may connect: use 127.0.0.1")
    return parts.hostname, parts.port


def settings_from(args: argparse.Namespace) -> Settings:
    feed, crypto_url, news_url = args.feed or "iex", ALPACA_CRYPTO_STREAM, ALPACA_NEWS_STREAM
    options_path = OPTIONS_PATH.format(feed=args.options_feed or "indicative")
    options_url = ALPACA_OPTIONS_STREAM.replace(OPTIONS_PATH.format(feed="indicative"), options_path)
    if args.test_stream:
        url, symbols = f"{ALPACA_STREAM}/test", args.symbols or [TEST_STREAM_SYMBOL]
    elif args.url and urlsplit(args.url).path in ("", "/"):  # a host: each stream at Alpaca's path on it
        host = args.url.rstrip("/")
        url, crypto_url, news_url = f"{host}/v2/{feed}", f"{host}{CRYPTO_PATH}", f"{host}{NEWS_PATH}"
        options_url = f"{host}{options_path}"
    else:
        url = args.url or f"{ALPACA_STREAM}/{feed}"
    if not args.test_stream:
        symbols = args.symbols or ([] if args.pairs or args.options else list(DEFAULT_SYMBOLS))
    here = args.demo or args.source or args.replay is not None  # no URL: they make or need none
    if args.demo:
        warn_of_unknown(symbols, args.pairs, args.options)
    if not (args.source or args.replay is not None or args.history):  # a --demo too: it makes its data up all the same
        for contract in args.options:
            expiry = option_symbol(contract).expires()
            if expiry < datetime.now(NEW_YORK).date():
                log.warning("%s expired on %s: Alpaca sends no trades or quotes for it", contract, expiry)
    if any(channel in ALPACA_CHANNELS for channel in args.channels):
        for symbol in symbols:
            if pair := UNSLASHED_PAIR.fullmatch(symbol):  # no stock's symbol is that long
                log.warning("%s is taken as a stock symbol, and no stock has it: the crypto pair is %s/%s",
                            symbol, *pair.groups())
    return Settings("" if here else url, symbols, args.channels, args.pairs, crypto_url, args.options, options_url,
                    news_url, demo=args.demo,
                    heartbeat=args.heartbeat, data_timeout=data_timeout(args), market_hours=not (
                        args.demo or args.test_stream), publish=args.publish or "", source=args.source or "",
                    durable=args.durable or "", nats_creds=args.nats_creds or "",
                    nats_ca=args.nats_ca or "", replicas=args.replicas or 0, replay=args.replay,
                    # --demo's paper account: its fills for the chart (a backtest hands over its own)
                    trade_updates=args.trade_updates or args.demo and args.chart is not None,
                    trading_url=args.trading_url or (LIVE_API if args.live else PAPER_API),
                    replay_speed=args.replay_speed or 0.0, fills=args.fills, report=args.report, serve=args.serve,
                    costs=costs_from(args),
                    chart=args.chart, history=args.history_span,
                    history_url=args.url.replace("ws", "http", 1) if args.url else "",
                    cache=not args.no_cache, feed=feed)


def data_timeout(args: argparse.Namespace) -> float:
    """--data-timeout, or its default; 0 for channels that may be silent all day."""
    if any(channel in STEADY_CHANNELS for channel in args.channels):
        return DATA_TIMEOUT if args.data_timeout is None else args.data_timeout
    if args.data_timeout:
        log.info("--data-timeout is off: %s can be silent all day", ", ".join(SAID[name] for name in args.channels))
    return 0.0


class ArgumentParser(argparse.ArgumentParser):
    """argparse's, its error messages (its own among them) fitted in WIDTH columns, and an
    option misspelt answered with the one meant (argparse does that only from Python 3.14)."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments: ") and "did you mean" not in message:
            options = [name for action in self._actions for name in action.option_strings]
            for word in message.removeprefix("unrecognized arguments: ").split():
                meant = difflib.get_close_matches(word, options, n=1) if word.startswith("--") else []
                message += f"; did you mean {meant[0]}?" if meant else ""
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, fitted(f"{self.prog}: error: {message}") + "\n")

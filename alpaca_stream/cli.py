"""The command line around the lesson's steps (websocket_stream.py's main()): the options, the
log on stderr, Ctrl+C and SIGTERM (handled here and nowhere else; a second one forces the
exit), and what ends a run, told as an exit status and a message, never a traceback for a
fault that can be expected. The summary at exit goes to the log."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from alpaca_stream.channels import (
    ALPACA_CHANNELS,
    CRYPTO_CHANNELS,
    CRYPTO_PATH,
    NEWS_PATH,
    OPTION_CHANNELS,
    OPTION_FEEDS,
    OPTIONS_PATH,
    STOCK_PATH_FEEDS,
    market_at,
)
from alpaca_stream.connection import check_alpaca_py
from alpaca_stream.errors import (
    EXIT_FORCED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNEXPECTED,
    EXIT_USAGE,
    FATAL_ADVICE,
    AlpacaRefused,
    ConfigError,
)
from alpaca_stream.handlers import Handlers, background_settled
from alpaca_stream.keys import Keys, check_keys, load_keys
from alpaca_stream.logs import JsonLogFormatter, LogFormatter, StderrHandler
from alpaca_stream.options import Settings, parse_args, settings_from
from alpaca_stream.orders import account, is_live, trade_at
from alpaca_stream.outputs import terminal
from alpaca_stream.outputs.chart import Chart
from alpaca_stream.outputs.report import Report
from alpaca_stream.outputs.serve import serving
from alpaca_stream.session import Session, heartbeat
from alpaca_stream.sources import Source
from alpaca_stream.sources.crypto import CryptoStream
from alpaca_stream.sources.demo import (
    DEMO_KEYS,
    Demo,
    DemoCryptoStream,
    DemoNewsStream,
    DemoOptionStream,
    DemoStream,
    DemoTradingUpdates,
)
from alpaca_stream.sources.news import NewsStream
from alpaca_stream.sources.options import OptionStream
from alpaca_stream.sources.recording import Played, Recording
from alpaca_stream.sources.stocks import StockStream
from alpaca_stream.sources.trading import TradingUpdates, positions
from alpaca_stream.subscriptions import Subscriptions
from alpaca_stream.supervisor import supervise

log = logging.getLogger("alpaca_stream")


class CommandLine:
    """The lesson's steps, run as a command: `with CommandLine(argv, __doc__) as run:`, then
    run.keys(), run.streams() and run.until_stopped() in the block. Whatever ends the block
    becomes run.exit_status, with a message on stderr: a bad option or configuration 2,
    Alpaca's refusal 3, a bug 1 (with its traceback), Ctrl+C 0 (130 before the stream takes it:
    while it starts)."""

    def __init__(self, argv: list[str] | None = None, doc: str | None = None) -> None:
        with ctrl_c_exits():
            self.options = parse_args(argv, doc)  # a bad option exits 2 here, --help 0
        self.session = Session()
        self.exit_status = EXIT_OK
        self.keys_given: Keys | None = None  # for --serve's clients to log in with
        self.stop: Callable[[], None] = lambda: None  # what ends the stream, once it runs

    def __enter__(self) -> CommandLine:
        options = self.options
        self.stderr = StderrHandler()
        self.stderr.setFormatter(JsonLogFormatter() if options.log_format == "json" else LogFormatter())
        logging.basicConfig(level=logging.WARNING, handlers=[self.stderr])
        # Only our logger goes to debug: websockets' debug lines would show the auth frame.
        log.setLevel(logging.DEBUG if options.verbose else logging.INFO)
        terminal.OUTPUT = "none" if options.quiet else "json" if options.json else "text"
        with ctrl_c_exits():
            self.settings: Settings = settings_from(options)  # it imports the local server, for --demo
        return self

    def keys(self, folder: Path) -> Keys:
        """Step 1, your API keys: from config.py in folder, else the environment, else a .env
        file there; checked before any connection. --demo, --source and --replay need none."""
        settings = self.settings
        if settings.demo or settings.source or settings.replay is not None:
            return DEMO_KEYS
        self.keys_given = check_keys(load_keys(folder))
        return self.keys_given

    def streams(self, keys: Keys) -> list[Source]:
        """Step 2, the streams for the symbols and channels asked: Alpaca's (or --demo's, from
        a local server), or a NATS broker (--source), or a recording (--replay), or Alpaca's
        historical data (--history)."""
        settings = self.settings
        if settings.source:
            with needs_nats("--source"):
                from alpaca_stream.nats_common import NatsAccess
                from alpaca_stream.sources.nats import NatsSource
            access = NatsAccess(settings.nats_creds, settings.nats_ca, settings.replicas)
            return [NatsSource(settings.source, settings.symbols, settings.channels, settings.durable,
                               pairs=settings.pairs, options=settings.options, access=access)]
        if settings.replay is not None:
            self.session.connected = False  # the summary counts no reconnects
            return [Recording(settings.replay, settings.replay_speed, settings.costs, fills=settings.fills)]
        if settings.history is not None:
            self.session.connected = False
            return [self.history(keys)]
        if settings.channels:  # market data, through alpaca-py's streams: not the order updates alone
            check_alpaca_py()
        trade_at(settings.trading_url, keys)  # trading_client()'s account (the demo's is its own)
        if is_live(settings.trading_url) and not settings.trade_updates:  # said loudly, from the start
            log.warning("--live: orders placed with trading_client() go to the\nLIVE account, real money")
        # One stream per endpoint, each its own connection: stocks, crypto pairs (BTC/USD),
        # options (AAPL261218C00250000), news.
        crypto_channels = [channel for channel in settings.channels if channel in CRYPTO_CHANNELS]
        stock_channels = [channel for channel in settings.channels if channel in ALPACA_CHANNELS]
        option_channels = [channel for channel in settings.channels if channel in OPTION_CHANNELS]
        news = "news" in settings.channels
        streams: list[Source] = []
        if settings.demo:
            demo = Demo()  # one local server, every stream's
            if settings.symbols and stock_channels:
                streams.append(DemoStream(settings.symbols, stock_channels, demo=demo,
                                          data_timeout=settings.data_timeout))
            if settings.pairs and crypto_channels:
                streams.append(DemoCryptoStream(settings.pairs, crypto_channels, demo=demo,
                                                data_timeout=settings.data_timeout))
            if settings.options and option_channels:
                streams.append(DemoOptionStream(settings.options, option_channels, demo=demo))
            if news:
                streams.append(DemoNewsStream(settings.symbols + settings.pairs, demo=demo))
            if settings.trade_updates:
                streams.append(DemoTradingUpdates(demo=demo))
            return streams
        if settings.symbols and stock_channels:
            streams.append(StockStream(settings.symbols, stock_channels, keys=keys, url=settings.url,
                                       data_timeout=settings.data_timeout, market_hours=settings.market_hours))
        if settings.pairs and crypto_channels:
            streams.append(CryptoStream(settings.pairs, crypto_channels, keys=keys, url=settings.crypto_url,
                                        data_timeout=settings.data_timeout))
        if settings.options and option_channels:
            streams.append(OptionStream(settings.options, option_channels, keys=keys, url=settings.options_url))
        if news:
            streams.append(NewsStream(settings.symbols + settings.pairs, keys=keys, url=settings.news_url))
        if settings.trade_updates:
            streams.append(TradingUpdates(keys=keys, url=settings.trading_url))
        return streams

    def history(self, keys: Keys) -> Source:
        """--history's source: the queries of the symbols and channels asked, from Alpaca's
        historical data API (or --url's host's), or from --demo's local server."""
        # Imported here: requests, which a replay does not need, takes 70 ms to import (measured).
        from alpaca_stream.sources.cache import PageCache
        from alpaca_stream.sources.history import ALPACA_HISTORY, DemoHistory, History, queries

        settings = self.settings
        assert settings.history is not None
        markets = {"stocks": settings.symbols, "crypto": settings.pairs, "options": settings.options}
        asked = queries({market: symbols for market, symbols in markets.items() if symbols}, settings.channels,
                        *settings.history, feed=settings.feed)
        if settings.demo:
            return DemoHistory(asked, settings.costs, settings.fills)
        return History(settings.history_url or ALPACA_HISTORY, keys, asked, settings.costs, settings.fills,
                       cache=PageCache() if settings.cache else None)

    def until_stopped(self, sources: list[Source], handlers: Handlers) -> None:
        """Step 3, each message to its handler, until Ctrl+C or SIGTERM (or a recording's end),
        each stream reconnecting after every fault; with --publish and --serve, to more bots;
        with --chart, to a page in the browser."""
        report = self.report(sources)
        if report:
            handlers = report.wrap(handlers)
        # What start-up made (alpaca-py, pandas and pydantic, when imported, most of it) lives to
        # the exit: frozen, the garbage collector no longer walks it at each full pass. A replay
        # of 1,000,000 messages with alpaca-py imported took 0.83 times as long (measured).
        frozen_already = gc.get_freeze_count()  # by a caller in the same process: left so
        gc.freeze()
        try:
            asyncio.run(self.run(sources, handlers))
        finally:
            if not frozen_already:
                gc.unfreeze()
        if report:  # after the sources have closed: a run stopped before its end has its result then
            try:
                # Stopped before its end: by a signal before the run was over (--chart's wait is after it).
                stopped = self.session.stopping and self.session.ended is None
                size = report.write(self.session.backtest, stopped)
            except OSError as error:
                raise ConfigError(f"--report: cannot write {report.path}:\n{error.strerror}") from None
            # The path first: the line stays one within 80 columns for a path of up to 44 characters.
            log.info("wrote %s (%s KB)", report.path, f"{size / 1000:,.0f}")

    def report(self, sources: list[Source]) -> Report | None:
        """--report's, its equity marked by the backtest's ledger at the recording's time."""
        settings = self.settings
        if settings.report is None:
            return None
        played = sources[0]
        assert isinstance(played, Played)  # --report goes with --replay or --history alone
        feed = played.feed
        # What was played: a recording's name, not its path (the report may be read anywhere).
        name = Path(settings.replay).name if settings.replay is not None else "history"
        report = Report(settings.report, name, lambda: feed.latest, settings.history)
        feed.ledger.marked = report.marked
        return report

    async def run(self, sources: list[Source], handlers: Handlers) -> None:
        settings = self.settings
        async with AsyncExitStack() as stack:  # what is opened here is closed in reverse, at the end
            # Ctrl+C and SIGTERM until the very end, clean-up included: a second one forces the exit.
            stack.enter_context(stop_on_signals(lambda: self.stop(), self.session, self.signalled))
            # Last before the signals are given back: the threads of asyncio.to_thread() are
            # waited for here (else asyncio.run() would, where a second Ctrl+C is a traceback).
            stack.push_async_callback(asyncio.get_running_loop().shutdown_default_executor)
            for source in sources:
                await stack.enter_async_context(source)  # a local server started, a recording checked
            stack.push_async_callback(background_settled)  # before the sources close: an order on its way
            if settings.publish:
                with needs_nats("--publish"):
                    from alpaca_stream.nats_common import NatsAccess
                    from alpaca_stream.outputs.nats import Publisher
                access = NatsAccess(settings.nats_creds, settings.nats_ca, settings.replicas)
                publisher = await stack.enter_async_context(Publisher(settings.publish, self.session, access))
                handlers = publisher.wrap(handlers)
            if settings.serve:
                host, port = settings.serve
                keyless = settings.demo or settings.source  # no keys of Alpaca's to check: any will do
                await stack.enter_async_context(serving(host, port, self.served(sources), self.session,
                                                        keys=None if keyless else self.keys_given))
            chart = None
            # The run's symbols from the start; a recording's as they come. Not once stopped while
            # starting: its address would be said after "stopping", for a page served for nothing.
            if settings.chart and not self.session.stopping:
                named = [] if settings.replay is not None else [*settings.symbols, *settings.pairs, *settings.options]
                chart = await stack.enter_async_context(Chart(*settings.chart, named))
                handlers = chart.wrap(handlers)
                if settings.trade_updates:  # an account's fills: the page starts from what it holds
                    await held_before(chart)
            # The run's coroutine made where it is awaited: one stopped before it starts is never made.
            await until_stopped(self.charted(sources, handlers, chart), self.session, settings.heartbeat,
                                also=self.streaming)

    async def charted(self, sources: list[Source], handlers: Handlers, chart: Chart | None) -> None:
        """The run; then, with --chart, its page stays served until Ctrl+C: a run that ends on
        its own (a replay, a history) would end before the page could be read."""
        await supervise(sources, handlers, self.session)
        if chart is not None and not self.session.stopping:
            self.session.ended = time.monotonic()  # the summary's time: the run's, not the wait's
            log.info("the run is over; the chart stays at %s\nuntil Ctrl+C", chart.address)
            chart.run_over()
            await asyncio.get_running_loop().create_future()  # cancelled by stop()

    def served(self, sources: list[Source]) -> dict[str, Subscriptions]:
        """--serve's paths, each with the subscriptions of the stream there: each stream's at
        its URL's path (/v2/iex, /v1beta3/crypto/us, ...); a NATS bot's at each of the paths
        of what it reads (its stocks at every feed's)."""
        settings = self.settings
        if settings.source:  # what the bot reads, of every market
            stocks = bool(settings.symbols and set(settings.channels) & set(ALPACA_CHANNELS))
            paths = [f"/v2/{feed}" for feed in STOCK_PATH_FEEDS] * stocks
            paths += [CRYPTO_PATH] * bool(settings.pairs) + [NEWS_PATH] * ("news" in settings.channels)
            paths += [OPTIONS_PATH.format(feed=feed) for feed in OPTION_FEEDS] * bool(settings.options)
            return dict.fromkeys(paths, sources[0].subscriptions)
        at = {urlsplit(getattr(source, "url", "")).path.rstrip("/"): source for source in sources}
        return {path: source.subscriptions for path, source in at.items() if market_at(path)}  # market data

    def streaming(self, stop: Callable[[], None]) -> None:
        """The stream has started, and stop() ends it: at Ctrl+C or SIGTERM, and when the reader
        of the log has gone (as when the reader of the data goes). Either may have come before."""
        self.stop = self.stderr.gone = stop
        if self.session.stopping or self.stderr.reader_gone:
            stop()

    def signalled(self, signum: int, again: bool) -> None:
        """Said at once, as a handler may hold the event loop: at the first Ctrl+C or SIGTERM,
        that the run is stopping; at a second, the summary, before the forced exit."""
        with self.stderr.written_at_once():
            if again:
                self.summarize()
            elif signum == signal.SIGINT:
                log.info("stopping; a second Ctrl+C forces it")
            else:
                log.info("stopping (SIGTERM); a second one forces it")

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> bool:
        message = ""
        if isinstance(error, ConfigError):
            self.exit_status, message = EXIT_USAGE, str(error)
        elif isinstance(error, AlpacaRefused):
            keys_from = self.keys_given.source if self.keys_given else "--demo"
            advice = error.advice or FATAL_ADVICE[error.code]
            self.exit_status, message = EXIT_REFUSED, advice.format(source=keys_from)
        elif isinstance(error, BrokenPipeError):
            # The reader went away (| head). Point stdout at devnull so the interpreter's final
            # flush does not fail again, as the Python docs advise for SIGPIPE.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        elif isinstance(error, Exception):
            log.error("unexpected error: please report it, with this traceback", exc_info=error)
            self.exit_status = EXIT_UNEXPECTED
            return True
        elif isinstance(error, KeyboardInterrupt):  # Ctrl+C before the run takes it: alpaca-py importing (0.5 to 1.2 s)
            log.info(STOPPED_WHILE_STARTING)
            self.exit_status = EXIT_FORCED
            return True
        elif error is not None:
            return False  # not ours to handle: SystemExit
        self.summarize()
        if message:
            log.error("%s", message)  # last, so that it is what the user reads
        return True

    def summarize(self) -> None:
        """The summary at exit; none for a run that could not start (no NATS server, refused
        keys, say)."""
        session = self.session
        nothing = not any(session.received.values())
        if session.started is None or self.exit_status in (EXIT_USAGE, EXIT_REFUSED) and nothing:
            return  # "received nothing" before the reason would say nothing more
        log.info("%s", session.summary(), extra={"fields": {
            "received": {kind: count for kind, count in session.received.items() if count},
            **({"reconnects": session.reconnects} if session.connected else {}),
            **({"published": session.published, "unpublished": session.unpublished}
               if session.publishing else {}),
            **({"served": session.served, "slow_clients": session.slow_clients}
               if session.served is not None else {}),
            **({"skipped": session.skipped} if session.skipped else {}),
            **({"printed_lines": session.printed} if session.printed else {}),
            **({"passed_over": session.passed_over} if session.passed_over else {}),
            **({"backtest": session.backtest.fields()} if session.backtest else {}),
            **({"handler_errors": session.failures} if session.failures else {})}})


async def held_before(chart: Chart) -> None:
    """The positions of the run's account (Alpaca's, or the demo's) as it starts, for the
    chart's page to start from; a backtest's account starts with none."""
    if account.url is None or account.keys is None:
        return
    try:
        held = await asyncio.to_thread(positions, account.url, account.keys)
    except (OSError, ValueError) as error:  # not the stream's fault: it goes on
        log.warning("--chart could not read the account's positions: %s;\nthe page counts from 0", error)
        return
    chart.held(held)


@contextmanager
def needs_nats(option: str) -> Iterator[None]:
    """Around the import of what an option needs: without nats-py or orjson, exit status 2
    and what to install, not a traceback."""
    try:
        yield
    except ModuleNotFoundError as error:
        if (error.name or "").partition(".")[0] in ("nats", "orjson"):
            raise ConfigError(f"{option} needs nats-py and orjson: pip install -r requirements.txt") from None
        raise


async def until_stopped(work: Coroutine[Any, Any, None], session: Session, every: float = 0.0,
                        also: Callable[[Callable[[], None]], object] | None = None) -> None:
    """Run work until it ends, or until it is stopped; every: seconds between two --heartbeat
    lines (0: none); also: given the function that stops the run, for whatever may stop it
    (Ctrl+C and SIGTERM, see stop_on_signals)."""
    session.started = time.monotonic()
    streaming = asyncio.create_task(work)
    beating = asyncio.create_task(heartbeat(session, every)) if every else None

    def stop() -> None:
        # Cancel, and again every half second until it has ended: before Python 3.12,
        # asyncio.wait_for (in nats-py, and ours around connect()) loses a cancel that comes just
        # as what it waits for completes (CPython issue 86296). Measured, the script exits 0.3
        # to 0.6 s after SIGINT, the longest with the broker away: a second cancel then cuts
        # short a close that is failing anyway.
        if not streaming.done():
            streaming.cancel()
            asyncio.get_running_loop().call_later(0.5, stop)

    if also:
        also(stop)
    try:
        await streaming
    except asyncio.CancelledError:
        # Ctrl+C cancelled the stream task, and the cancel reached us through `await streaming`.
        # That is how the user asks us to stop: finish normally.
        pass
    finally:
        if beating:
            beating.cancel()


STOPPED_WHILE_STARTING = "stopped (Ctrl+C) while starting"


@contextmanager
def ctrl_c_exits() -> Iterator[None]:
    """Ctrl+C while the command line starts, outside the `with` block (whose end takes it):
    exit 130 with a line, not a traceback."""
    try:
        yield
    except KeyboardInterrupt:
        log.info(STOPPED_WHILE_STARTING)
        raise SystemExit(EXIT_FORCED) from None


@contextmanager
def stop_on_signals(stop: Callable[[], object], session: Session,
                    told: Callable[[int, bool], None]) -> Iterator[None]:
    """Ctrl+C or SIGTERM: no message is handed over from then on (session.stopping), told() says
    so, and stop() ends the run; a second one: told() again (the summary), and exit 130 at once.
    Restores the old handlers.

    signal.signal, not loop.add_signal_handler, which Windows lacks, and which would wait for
    the event loop: a handler that blocks (time.sleep, a blocking HTTP call) holds it, while
    Python runs this between two bytecodes of the main thread, even in the middle of a sleep.
    So this says what it has to say itself, and schedules the stop on the loop."""
    loop = asyncio.get_running_loop()
    signals = [signal.SIGINT, signal.SIGTERM]

    def handle(signum: int, frame: object) -> None:
        if signum == signal.SIGINT and sys.stderr.isatty():  # the terminal echoed ^C:
            with contextlib.suppress(OSError):  # what follows starts a line of its own
                os.write(sys.stderr.fileno(), b"\n")
        if session.stopping:
            told(signum, True)
            os._exit(EXIT_FORCED)  # the first stop is stuck: skip all clean-up
        session.stopping = True
        told(signum, False)
        loop.call_soon_threadsafe(stop)

    originals = {sig: signal.signal(sig, handle) for sig in signals}
    try:
        yield
    finally:
        for sig, original in originals.items():
            signal.signal(sig, original)

"""--history: a span of past days from Alpaca's historical data API, into the handlers as a
--replay reads a recording (recording.py's Played: a backtest too, when they place orders).

One paged query per symbol and channel (news: one for all the symbols), each read a page ahead
on a thread of its own; the queries merged by time on another thread as their pages arrive,
into batches for the event loop, which never waits on the network. A query holds at most three
pages (one merged, one waiting, one on its way), never a whole day. Each row becomes the message
the stream would have sent: its "T" and "S", its time a datetime; a page is cached as those
messages in msgpack, as the stream sends them, which read back into records with no more work
than the stream's (cache.py)."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import email.utils
import functools
import itertools
import logging
import queue
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any

import msgpack
import orjson
import requests

from alpaca_stream.errors import AlpacaRefused, ConfigError
from alpaca_stream.keys import Keys
from alpaca_stream.orders import Costs
from alpaca_stream.reconnect import backoff_delay
from alpaca_stream.records import record_in_market
from alpaca_stream.session import Session
from alpaca_stream.sources.cache import PageCache
from alpaca_stream.sources.recording import REPLAY_BATCH, Played
from alpaca_stream.times import rfc3339

log = logging.getLogger("alpaca_stream")

ALPACA_HISTORY = "https://data.alpaca.markets"
LIMIT = 10_000  # rows a page: Alpaca's most
NEWS_LIMIT = 50  # articles a page: Alpaca's most for news
# Each channel's path (after the market's), its wire type, and its place among messages of the
# same time (ties go by channel, then by symbol).
CHANNELS = {"trades": "t", "quotes": "q", "bars": "b", "news": "n"}
MARKET_PATHS = {"stocks": "/v2/stocks/", "crypto": "/v1beta3/crypto/us/", "options": "/v1beta1/options/"}
NEWS_PATH = "/v1beta1/news"
# A minute bar's time is its minute's start; the stream sends it once the minute is over, and a
# backtest must not see its close before then: merged at its minute's end.
BAR_DUE = timedelta(minutes=1)
AHEAD = 4  # batches merged ahead of the handlers
# Requests on their way at once, whatever the queries: Alpaca's free plan takes 200 a minute, and
# 30 symbols' trades and quotes would ask 60 at once.
ASKING = 8
TIMEOUT = 30.0  # seconds for an answer
# Seconds of faults in a row (the network's, or a server's 5xx) after which a page is given up,
# retried meanwhile as the stream reconnects (backoff_delay): a blip passes; an address that is
# wrong or down ends the run, where the stream, which has no end, goes on trying.
GIVE_UP = 60.0
RATE_WAIT_LEAST = 0.25  # seconds, whatever the headers say: a clock a little ahead of Alpaca's
RATE_WAIT_DEFAULT = 3.0  # seconds, for a 429 with no header to say (alpaca-py's wait)
WAITING = 0.5  # seconds a thread waits at a time before it looks whether the run has stopped
PROGRESS_ON_TERMINAL, PROGRESS_IN_LOG = 0.25, 10.0  # seconds between two progress lines
RECENT_SIP = ("Alpaca's free plan has no SIP data of the last 15 minutes\n({status} {message}):\n"
              "use --feed iex, or a time at least 15 minutes old.")
KEYS_REFUSED = ("Alpaca's historical data API refused the keys\n({status} {message}).\n"
                "They came from {{source}}.")
QUERY_REFUSED = "Alpaca's historical data API refused a query\n({status} {message}):\n{path}"
DUE = itemgetter(0)
Batch = list[dict[str, Any]]  # of records
Timed = list[tuple[datetime, dict[str, Any]]]  # records, each after the time it is merged at


class Stopped(Exception):
    """The run stopped while a thread waited: it ends quietly."""


class Unreachable(ConfigError):
    """The historical data API could not be reached for GIVE_UP seconds: exit status 2, as a
    --url or a NATS server that cannot be reached."""


@dataclass(frozen=True)
class Query:
    """One paged query: its path, the key its rows are under (its channel), its parameters
    (without the page token)."""

    path: str
    channel: str
    params: tuple[tuple[str, str], ...]


def queries(markets: dict[str, list[str]], channels: list[str], start: datetime, end: datetime,
            feed: str = "iex") -> list[Query]:
    """The queries of the channels asked (trades, quotes, bars, news) for the symbols of each
    market ("stocks", "crypto", "options"), from start to end (both included): one a symbol and
    channel, in the order ties are broken in; one for the news of the stocks and pairs, as the
    news stream's (news is about stocks and coins: the local server refuses an option's symbol)."""
    span = (("start", rfc3339_text(start)), ("end", rfc3339_text(end)), ("sort", "asc"))
    made = []
    for channel in (name for name in CHANNELS if name in channels and name != "news"):
        extra = (("timeframe", "1Min"), ("adjustment", "raw")) if channel == "bars" else ()
        for market, symbols in markets.items():
            market_extra = (("feed", feed),) if market == "stocks" else ()
            made += [Query(MARKET_PATHS[market] + channel, channel,
                           (("symbols", symbol), *span, *extra, *market_extra)) for symbol in sorted(symbols)]
    if "news" in channels:
        every = ",".join(sorted(itertools.chain(markets.get("stocks", ()), markets.get("crypto", ()))))
        made.append(Query(NEWS_PATH, "news", (("symbols", every), *span, ("include_content", "true"))))
    return made


def rfc3339_text(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


class History(Played):
    """The queries' messages from the historical API at url (Alpaca's, or a local server's),
    with these keys, merged by time; limit: rows a page; costs and fills: its backtest's. It
    ends when the last query's last page has been handed over."""

    played = "history"

    def __init__(self, url: str, keys: Keys, asked: list[Query], costs: Costs | None = None,
                 fills: str | None = None, limit: int = LIMIT, cache: PageCache | None = None) -> None:
        super().__init__(costs, fills)
        self.url, self.keys, self.queries, self.limit, self.cache = url.rstrip("/"), keys, asked, limit, cache
        self.stopped = threading.Event()
        self.slots = threading.Semaphore(AHEAD)
        self.pages = 0  # read, for the progress line
        self.kept = 0  # of them, read from the cache
        self.lock = threading.Lock()
        self.asking = threading.BoundedSemaphore(ASKING)

    async def __aenter__(self) -> History:
        self.open_feed()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.stopped.set()  # every thread ends at its next look
        await super().__aexit__()

    async def batches(self, session: Session) -> AsyncIterator[list[dict[str, Any]]]:
        """The merged messages, a batch at a time, as the merging thread makes them."""
        log.info("history from %s: %s; Ctrl+C to stop", self.url, plural(len(self.queries), "query", "queries"))
        loop = asyncio.get_running_loop()
        ready: asyncio.Queue[Batch | BaseException | None] = asyncio.Queue()

        def hand(batch: Batch | BaseException | None) -> None:
            loop.call_soon_threadsafe(ready.put_nowait, batch)  # RuntimeError once the loop has closed

        threading.Thread(target=self.merge, args=(hand,), daemon=True, name="history merge").start()
        progress = Progress()
        try:
            while (batch := await ready.get()) is not None:
                if isinstance(batch, BaseException):
                    raise batch
                self.slots.release()
                progress.show(batch, self.pages)
                yield batch
            log.info("history: %s from %s%s", plural(progress.messages, "message"), plural(self.pages, "page"),
                     f",\n{self.kept:,} of them from the cache" if self.cache else "")
        finally:
            self.stopped.set()
            progress.done()

    def merge(self, hand: Callable[[Batch | BaseException | None], None]) -> None:
        """On its own thread: the queries' rows merged by time (ties by the queries' order),
        handed over in batches, at most AHEAD of them waiting; then None, or what went wrong."""
        try:
            for run in merged(list(map(self.pages_of, self.queries))):
                for first in range(0, len(run), REPLAY_BATCH):
                    while not self.slots.acquire(timeout=WAITING):
                        if self.stopped.is_set():
                            return
                    hand(run[first:first + REPLAY_BATCH])
            hand(None)
        except Stopped:
            pass
        except Exception as error:  # to the event loop, which raises it
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody to tell
                hand(error)

    def pages_of(self, query: Query) -> Iterator[Timed]:
        """The query's records after the time they are merged at, a page's array at a time; its
        pages fetched from now on, on a thread of its own, the next while this one is merged.
        (Not a generator itself: each query's first page is asked at once, not when the merge
        first reads it, which would ask them one after the other.)"""
        pages: queue.Queue[Page | BaseException] = queue.Queue(maxsize=1)
        threading.Thread(target=self.fetch, args=(query, pages), daemon=True, name="history fetch").start()
        return self.read(query.channel, pages)

    def read(self, channel: str, pages: queue.Queue[Page | BaseException]) -> Iterator[Timed]:
        """The pages' records as fetch() puts them; what went wrong there, raised here."""
        while True:
            page = self.waited(pages.get)
            if isinstance(page, BaseException):
                raise page
            for records in page.records():
                yield timed(channel, records)
            if not page.token:
                return

    def fetch(self, query: Query, pages: queue.Queue[Page | BaseException]) -> None:
        """On its own thread: the query's pages, in turn, each put as soon as the one before it
        is taken; what went wrong, put in place of a page."""
        http = requests.Session()
        limit = min(self.limit, NEWS_LIMIT) if query.channel == "news" else self.limit
        token: str | None = None
        try:
            while True:
                page = self.page(http, query, limit, token)
                self.waited(functools.partial(pages.put, page))
                token = page.token
                if not token:
                    return
        except Stopped:
            pass
        except Exception as error:
            pages.put(error)
        finally:
            http.close()

    def waited(self, wait: Callable[..., Any]) -> Any:
        """wait(timeout=) (a queue's get or put) again until it is done, or until the run stops."""
        while True:
            try:
                return wait(timeout=WAITING)
            except (queue.Empty, queue.Full):
                if self.stopped.is_set():
                    raise Stopped from None

    def page(self, http: requests.Session, query: Query, limit: int, token: str | None) -> Page:
        """One page, from the cache or as Alpaca answers it; past a rate limit (429) after the
        wait its headers say, and after a network fault or a server's error (5xx) with a longer
        wait each time. AlpacaRefused for what retrying cannot cure."""
        params = {**dict(query.params), "limit": str(limit), **({"page_token": token} if token else {})}
        url = self.url + query.path
        if self.cache and (kept := self.cache.get(url, params, Page.kept)) is not None:
            with self.lock:
                self.pages += 1
                self.kept += 1
            return kept
        headers = {"APCA-API-KEY-ID": self.keys.key, "APCA-API-SECRET-KEY": self.keys.secret}
        faults = 0
        first_fault = 0.0
        while True:
            try:
                with self.asking:
                    if self.stopped.is_set():  # while it waited for its turn
                        raise Stopped
                    answer = http.get(url, params=params, headers=headers, timeout=TIMEOUT)
            except requests.RequestException as error:
                fault = in_words(error)
            else:
                fault = f"answered {answer.status_code}" if answer.status_code >= 500 else ""
            if fault:
                faults += 1
                first_fault = first_fault or time.monotonic()
                if time.monotonic() - first_fault >= GIVE_UP:
                    raise Unreachable(f"the historical data API at {self.url}\nfailed for {GIVE_UP:.0f} s "
                                      f"({fault}).\nIs the address right, and the network up?")
                delay = backoff_delay(faults)
                log.warning("the historical data API: %s; trying again in %.1f s", fault, delay)
                self.pause(delay)
            elif answer.status_code == 200:
                with self.lock:
                    self.pages += 1
                page = made(query.channel, orjson.loads(answer.content))
                if self.cache:
                    end = rfc3339(dict(query.params)["end"])
                    self.cache.keep(url, params, page.packed, not page.token, end)
                return page
            elif answer.status_code == 429:
                seconds = rate_wait(answer.headers)
                log.info("Alpaca's rate limit: going on in %.1f s", seconds)
                self.pause(seconds)
            else:
                raise refusal(answer, query.path)

    def pause(self, seconds: float) -> None:
        """Wait, unless the run stops (Stopped)."""
        if self.stopped.wait(seconds):
            raise Stopped


class DemoHistory(History):
    """--demo --history: the made-up days of a local server started here (server/history.py), with
    no keys, no network, and no cache (its port, which the pages are kept under, is new each run)."""

    def __init__(self, asked: list[Query], costs: Costs | None = None, fills: str | None = None) -> None:
        # Imported here, as Demo does: the server's code is for --demo and --serve.
        from alpaca_stream.server import AlpacaStreamServer
        from alpaca_stream.sources.demo import DEMO_KEYS

        super().__init__("", DEMO_KEYS, asked, costs, fills)
        self.server = AlpacaStreamServer(rate=None, record=False)

    async def __aenter__(self) -> DemoHistory:
        await super().__aenter__()  # --fills' file first: if it cannot be written, no server is left running
        await self.server.start()
        self.url = self.server.history_url
        log.info("demo history from a local server, not the market")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await super().__aexit__(*exc_info)
        finally:
            await self.server.stop()


class Page:
    """A page as the cache keeps it and the merge reads it (packed): msgpack's, the token of the
    next page (None: the last), then the messages as the stream sends them (their times
    datetimes already), in arrays of REPLAY_BATCH. Read an array at a time: the records of
    whole pages, held while merged, made each full pass of the garbage collector walk them all
    (merging 800,000 cached messages took 9.1 s, 5.0 of them in those passes; 4.1 s and 0.1 s
    an array at a time: measured)."""

    def __init__(self, packed: bytes) -> None:
        self.packed = packed
        self.unpacker = msgpack.Unpacker(timestamp=3)  # 3: timestamps as UTC datetimes, as the stream's
        self.unpacker.feed(packed)
        self.token: str | None = self.unpacker.unpack()

    @classmethod
    def kept(cls, packed: bytes) -> Page:
        """A page read from the cache, checked whole by skipping through its arrays (nothing is
        built: cheap); ValueError if it is not one (a damaged file): asked again."""
        check = msgpack.Unpacker()
        check.feed(packed)
        try:
            if not isinstance(check.unpack(), (str, type(None))):
                raise ValueError("not a page's token")
            while check.tell() < len(packed):
                for _ in range(check.read_array_header()):
                    check.skip()
        except msgpack.OutOfData:  # cut short
            raise ValueError("not a whole page") from None
        return cls(packed)

    @classmethod
    def of(cls, records: Batch, token: str | None) -> Page:
        arrays = (msgpack.packb(records[first:first + REPLAY_BATCH], datetime=True)
                  for first in range(0, len(records), REPLAY_BATCH))
        return cls(b"".join((msgpack.packb(token), *arrays)))

    def records(self) -> Iterator[Batch]:
        """The page's records, an array at a time, each made as the stream makes them (a
        query's messages are all of one kind and symbol)."""
        for messages in self.unpacker:
            yield list(map(record_in_market(messages[0]["T"], messages[0].get("S", "")), messages))


def made(channel: str, page: dict) -> Page:
    """A page as Alpaca answers it, as the stream's records."""
    records: Batch = []
    if channel == "news":
        record = record_in_market("n", "")
        for row in page.get("news") or ():
            row.pop("images", None)  # not in the stream's articles
            row["T"] = "n"
            row["created_at"], row["updated_at"] = rfc3339(row["created_at"]), rfc3339(row["updated_at"])
            records.append(record(row))
    else:
        wire_type = CHANNELS[channel]
        for symbol, rows in (page.get(channel) or {}).items():
            record = record_in_market(wire_type, symbol)
            for row in rows:
                row["T"], row["S"], row["t"] = wire_type, symbol, rfc3339(row["t"])
                records.append(record(row))
    return Page.of(records, page.get("next_page_token"))


def timed(channel: str, records: Batch) -> Timed:
    """Each record after the time it is merged at: a news article's creation, a bar's end, the
    time of the rest."""
    if channel == "news":
        return [(record["created_at"], record) for record in records]
    if channel == "bars":
        return [(record["t"] + BAR_DUE, record) for record in records]
    return [(record["t"], record) for record in records]


def merged(queries: list[Iterator[Timed]]) -> Iterator[Batch]:
    """The queries' records, each query's in time order an array at a time, merged by time
    (ties in the queries' order), a run at a time: each run what the queries hold before the
    earliest time any query's array reaches (its next array may go on from that time). An
    array at a time, not a record: sorted arrays are merged by one sort, in C, and a single
    query's need none."""
    held: list[Timed] = [[] for _ in queries]
    going = set(range(len(queries)))  # the queries with pages to come
    while going or any(held):
        for index in sorted(going):
            # An array all at one time says nothing of the next one's first: read that too.
            while index in going and (not held[index] or held[index][0][0] == held[index][-1][0]):
                array = next(queries[index], None)
                if array is None:
                    going.discard(index)
                else:
                    held[index] = held[index] + array if held[index] else array
        reached = min((held[index][-1][0] for index in going), default=None)
        run: Timed = []
        runs = 0
        for index, rows in enumerate(held):
            cut = len(rows) if reached is None else bisect.bisect_left(rows, reached, key=DUE)
            if cut:
                run += rows[:cut]
                held[index] = rows[cut:]
                runs += 1
        if runs > 1:
            run.sort(key=DUE)  # stable: ties stay in the queries' order
        yield [record for _, record in run]


def in_words(error: requests.RequestException) -> str:
    """A fault of the network, in the system's words (Connection refused) where it has them."""
    if isinstance(error, requests.Timeout):
        return f"no answer in {TIMEOUT:.0f} s"
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        # requests' error holds urllib3's, whose reason is the socket's
        cause = (getattr(cause, "reason", None) or cause.__cause__ or cause.__context__
                 or next((arg for arg in cause.args if isinstance(arg, BaseException)), None))
    return type(error).__name__


def plural(count: int, one: str, many: str = "") -> str:
    """1 page, 2 pages, 10,000 pages."""
    return f"{count:,} {one if count == 1 else many or one + 's'}"


def rate_wait(headers: Any) -> float:
    """Seconds to wait after a 429: until X-RateLimit-Reset (Unix seconds), or Retry-After
    (seconds, or an HTTP date)."""
    if reset := headers.get("X-RateLimit-Reset"):
        try:
            return max(float(reset) - time.time(), RATE_WAIT_LEAST)
        except ValueError:
            pass
    if after := headers.get("Retry-After"):
        try:
            return max(float(after), RATE_WAIT_LEAST)
        except ValueError:
            when = email.utils.parsedate_to_datetime(after)
            return max(when.timestamp() - time.time(), RATE_WAIT_LEAST)
    return RATE_WAIT_DEFAULT


def refusal(answer: requests.Response, path: str) -> AlpacaRefused:
    """What to tell of an answer that no retry cures: exit status 3, with the advice."""
    try:
        message = str(orjson.loads(answer.content)["message"])
    except (ValueError, KeyError, TypeError):
        message = answer.reason or "no reason given"
    status = answer.status_code
    said = {"status": status, "message": message.replace("{", "{{").replace("}", "}}"), "path": path}
    if status == 403 and "SIP" in message:
        return AlpacaRefused(status, message, RECENT_SIP.format(**said))
    if status in (401, 403):
        return AlpacaRefused(status, message, KEYS_REFUSED.format(**said))
    return AlpacaRefused(status, message, QUERY_REFUSED.format(**said))


class Progress:
    """The progress line on stderr: the time reached, messages, pages; in place on a terminal
    (when the data goes elsewhere), else a line in the log every PROGRESS_IN_LOG seconds."""

    def __init__(self) -> None:
        self.in_place = sys.stderr.isatty() and not sys.stdout.isatty()
        self.every = PROGRESS_ON_TERMINAL if self.in_place else PROGRESS_IN_LOG
        self.shown = time.monotonic()
        self.messages = 0
        self.line = ""

    def show(self, batch: Batch, pages: int) -> None:
        self.messages += len(batch)
        now = time.monotonic()
        if now - self.shown < self.every:
            return
        self.shown = now
        last = batch[-1]
        when = last.get("t") or last.get("created_at")
        reached = f"{when:%Y-%m-%d %H:%M}Z" if isinstance(when, datetime) else "?"
        self.line = f"history {reached}: {self.messages:,} messages, {pages:,} pages"
        if self.in_place:
            sys.stderr.write("\r" + self.line.ljust(79))
            sys.stderr.flush()
        else:
            log.info("%s", self.line)

    def done(self) -> None:
        if self.in_place and self.line:
            sys.stderr.write("\n")
            sys.stderr.flush()

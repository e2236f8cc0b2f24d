"""--history: past days from Alpaca's historical data API into the handlers, read from the local
server as from Alpaca: page after page of each symbol and channel, merged by time as they come,
nothing missing, nothing twice; through a rate limit; refused recent SIP data told as Alpaca's
refusal."""

from __future__ import annotations

import asyncio
import logging
import random
import zlib
from datetime import datetime, timedelta, timezone

import msgpack
import pytest
import requests
from conftest import KEYS, Recorder, ServerThread, until, within

from alpaca_stream.errors import AlpacaRefused
from alpaca_stream.handlers import routes_for
from alpaca_stream.records import Record
from alpaca_stream.server.history import RateLimit
from alpaca_stream.session import Session
from alpaca_stream.sources import history
from alpaca_stream.sources.cache import PageCache
from alpaca_stream.sources.history import History, queries
from alpaca_stream.sources.recording import REPLAY_BATCH
from alpaca_stream.times import rfc3339

pytestmark = pytest.mark.timeout(40)

TRADES = 1_500  # a symbol's trades a day on the local server, and as many quotes
# 2025-12-02, a Tuesday: New York's day, its extended hours and more
START, END = datetime(2025, 12, 2, 5, tzinfo=timezone.utc), datetime(2025, 12, 3, 4, 59, tzinfo=timezone.utc)
TWO = {"stocks": ["TSLA", "SPY"]}


def played(server: ServerThread, channels: list[str], markets: dict[str, list[str]] = TWO, limit: int = 10_000,
           start: datetime = START, end: datetime = END, cache: PageCache | None = None, **given: str) -> list[Record]:
    """What the handlers get of a history from the server."""
    recorder = Recorder()
    source = History(server.server.history_url, KEYS, queries(markets, channels, start, end, **given), limit=limit,
                     cache=cache)

    async def play() -> None:
        async with source:
            await source.run(routes_for(recorder.handlers, source.types), Session())

    within(play(), 30)
    return recorder.messages


def served(server: ServerThread, channel: str, symbol: str) -> list[dict]:
    """The server's rows of one symbol and channel, in one page."""
    answer = requests.get(f"{server.server.history_url}/v2/stocks/{channel}", timeout=10, params={
        "symbols": symbol, "start": START.isoformat(), "end": END.isoformat(), "limit": "10000"},
        headers={"APCA-API-KEY-ID": KEYS.key, "APCA-API-SECRET-KEY": KEYS.secret}).json()
    assert answer["next_page_token"] is None
    return answer[channel][symbol]


@pytest.fixture
def server(make_server) -> ServerThread:
    return make_server(rate=None, history_trades=TRADES)


def test_pages_of_two_symbols_are_merged_in_time_order_nothing_missing_nothing_twice(server):
    paged = played(server, ["trades", "quotes"], limit=400)  # 4 pages a symbol and channel
    assert paged == played(server, ["trades", "quotes"])  # against one page each
    assert len(paged) == 4 * TRADES
    times = [message.timestamp for message in paged]
    assert times == sorted(times)
    for wire_type, channel in (("t", "trades"), ("q", "quotes")):
        for symbol in ("SPY", "TSLA"):
            got = [{key: value for key, value in message.items() if key not in "TS"}
                   for message in paged if message["T"] == wire_type and message.symbol == symbol]
            assert got == [{**row, "t": rfc3339(row["t"])} for row in served(server, channel, symbol)]
    assert {type(message).__name__ for message in paged} == {"Trade", "Quote"}


def test_a_minute_bar_comes_after_the_trades_of_its_minute_as_the_stream_sends_it(server):
    messages = played(server, ["trades", "bars"], {"stocks": ["SPY"]})
    bars = [index for index, message in enumerate(messages) if message["T"] == "b"]
    assert len(bars) > 100
    for index in bars:
        minute = messages[index].timestamp
        later = [message for message in messages[index:] if message["T"] == "t"]
        earlier = [message for message in messages[:index] if message["T"] == "t"]
        assert all(message.timestamp >= minute + timedelta(minutes=1) for message in later[:5])
        assert sum(message.timestamp >= minute for message in earlier) == messages[index].trade_count


def test_a_429_in_the_middle_is_waited_out_as_its_headers_say_and_loses_nothing(make_server, caplog):
    limit = RateLimit(calls=5, window=1.5)  # 12 pages: refused after the fifth, until the window ends
    limited = make_server(rate=None, history_trades=TRADES, history_rate_limit=limit)
    with caplog.at_level(logging.INFO, "alpaca_stream"):
        messages = played(limited, ["trades", "quotes"], limit=600)
    assert limit.refused >= 1 and "rate limit" in caplog.text
    assert messages == played(make_server(rate=None, history_trades=TRADES), ["trades", "quotes"])


def test_recent_sip_data_refused_ends_the_run_with_alpacas_advice(server):
    now = datetime.now(timezone.utc)
    with pytest.raises(AlpacaRefused) as refused:
        played(server, ["trades"], start=now - timedelta(hours=1), end=now, feed="sip")
    assert refused.value.code == 403 and "--feed iex" in refused.value.advice
    assert "15 minutes old" in refused.value.advice
    assert played(server, ["trades"], start=now - timedelta(hours=1), end=now, feed="iex") is not None


def test_the_progress_line_says_the_time_reached_and_fits_the_log(server, caplog, monkeypatch):
    monkeypatch.setattr(history, "PROGRESS_IN_LOG", 0.0)  # a line each batch
    with caplog.at_level(logging.INFO, "alpaca_stream"):
        messages = played(server, ["trades", "quotes"], limit=1_000)
    lines = [record.getMessage() for record in caplog.records if record.getMessage().startswith("history 2025")]
    assert lines and all(len(line) <= 58 for line in lines)  # 80 columns with the log's time
    assert lines[-1].startswith(f"history {messages[-1].timestamp:%Y-%m-%d %H:%M}Z: {len(messages):,} messages")


@pytest.fixture
def counted(make_server) -> tuple[ServerThread, RateLimit]:
    """A server, and its count of the requests it was asked (a rate limit never reached)."""
    requests_made = RateLimit(calls=10**9, window=3600)
    return make_server(rate=None, history_trades=TRADES, history_rate_limit=requests_made), requests_made


def test_a_second_run_of_the_same_span_reads_the_cache_and_asks_the_server_nothing(counted, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    server, made = counted
    first = played(server, ["trades", "quotes", "bars"], limit=1_000, cache=PageCache())
    asked = made.used
    assert asked == 2 * 2 * 2 + 2  # 2 pages of each symbol's trades and quotes, 1 of its bars
    assert len(list((tmp_path / "alpaca-stream" / "history").rglob("*.msgpack.z"))) == asked
    assert played(server, ["trades", "quotes", "bars"], limit=1_000, cache=PageCache()) == first
    assert made.used == asked  # no request at all
    played(server, ["trades"], limit=1_000, cache=PageCache(), feed="sip")  # another feed: not the same pages
    assert made.used == asked + 4


def test_a_page_is_cached_as_the_streams_messages_in_msgpack_arrays_that_read_straight_into_records(counted,
                                                                                                   tmp_path):
    server, _ = counted
    handed = played(server, ["trades"], {"stocks": ["SPY"]}, limit=1_500, cache=PageCache(tmp_path))
    [kept] = list(tmp_path.rglob("*.msgpack.z"))  # one page of 1,500
    unpacker = msgpack.Unpacker(timestamp=3)
    unpacker.feed(zlib.decompress(kept.read_bytes()))
    assert unpacker.unpack() is None  # the next page's token: none
    arrays = list(unpacker)
    assert [len(array) for array in arrays] == [REPLAY_BATCH, TRADES - REPLAY_BATCH]  # read an array at a time
    assert [message for array in arrays for message in array] == handed  # times as datetimes, "T" and "S"


@pytest.mark.parametrize("seed", range(20))
def test_the_merge_of_arrays_gives_every_record_once_by_time_ties_in_the_queries_order(seed):
    rng = random.Random(seed)
    # Each query's records in time order, often at the same time as another's or its own, some
    # arrays all at one time, some queries empty; in arrays of 1 to 5.
    made = [sorted((rng.randrange(12), query, number) for number in range(rng.randrange(25)))
            for query in range(rng.randrange(1, 5))]

    def arrays(records: list[tuple[int, int, int]]):
        while records:
            cut = rng.randrange(1, 6)
            yield [(at, record) for at, *record in records[:cut]]
            records = records[cut:]

    runs = list(history.merged([arrays(records) for records in made]))
    assert [record for run in runs for record in run] == [[query, number] for _, query, number in sorted(
        record for records in made for record in records)]


def test_the_last_page_of_a_day_not_over_is_not_kept_and_is_asked_again(counted, tmp_path):
    server, made = counted
    now = datetime.now(timezone.utc)
    hour = {"markets": {"crypto": ["BTC/USD"]}, "start": now - timedelta(hours=2), "end": now, "limit": 20}
    first = played(server, ["trades"], cache=PageCache(tmp_path), **hour)  # type: ignore[arg-type]
    asked = made.used
    assert asked > 3 and len(first) > 60
    second = played(server, ["trades"], cache=PageCache(tmp_path), **hour)  # type: ignore[arg-type]
    assert made.used == asked + 1 and second == first  # the last page again; the others are whole


def test_no_more_than_eight_requests_are_on_their_way_at_once_whatever_the_queries(server):
    ten = {"stocks": ["AAPL", "AMD", "AMZN", "GOOG", "META", "MSFT", "NFLX", "NVDA", "SPY", "TSLA"]}
    answer, asking = server.server.history.answer, [0, 0]  # now, and the most

    async def slowly(request):  # held until 8 are on their way at once (or 5 s), whatever the load
        asking[0] += 1
        asking[1] = max(asking)
        try:
            await until(lambda: asking[1] >= 8, "8 requests at once", timeout=5)
            await asyncio.sleep(0.1)  # time for more to come, if more could
            return await answer(request)
        finally:
            asking[0] -= 1

    server.server.history.answer = slowly
    messages = played(server, ["trades", "quotes"], ten)
    assert len(messages) == 2 * 10 * TRADES
    assert asking[1] == history.ASKING == 8  # 20 queries: without the cap, 20 at once


def test_the_news_is_asked_of_the_stocks_and_pairs_not_of_the_options():
    asked = queries({"stocks": ["SPY"], "crypto": ["BTC/USD"], "options": ["AAPL261218C00250000"]}, ["news"],
                    START, END)
    assert [dict(query.params)["symbols"] for query in asked] == ["BTC/USD,SPY"]


@pytest.mark.parametrize("digits", range(10))
def test_alpacas_times_read_with_any_number_of_digits_and_a_z_on_every_python(digits):
    # Alpaca's JSON times end in Z with up to nine digits, fewer when they end in zeros; Python
    # 3.10's fromisoformat() reads neither (the CI leg of 3.10 failed on "09:00:06.6Z").
    fraction = "." + "123456789"[:digits] if digits else ""
    when = rfc3339(f"2025-12-02T09:00:06{fraction}Z")
    assert when == datetime(2025, 12, 2, 9, 0, 6, int(f"{'123456789'[:min(digits, 6)]:0<6}"), tzinfo=timezone.utc)

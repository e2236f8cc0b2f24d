"""--history: past days from Alpaca's historical data API into the handlers, read from the local
server as from Alpaca: page after page of each symbol and channel, merged by time as they come,
nothing missing, nothing twice; through a rate limit; refused recent SIP data told as Alpaca's
refusal."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pytest
import requests
from conftest import KEYS, Recorder, ServerThread, within

from alpaca_stream.errors import AlpacaRefused
from alpaca_stream.handlers import routes_for
from alpaca_stream.records import Record
from alpaca_stream.server.history import RateLimit
from alpaca_stream.session import Session
from alpaca_stream.sources import history
from alpaca_stream.sources.history import History, queries
from alpaca_stream.times import rfc3339

pytestmark = pytest.mark.timeout(40)

TRADES = 1_500  # a symbol's trades a day on the local server, and as many quotes
# 2025-12-02, a Tuesday: New York's day, its extended hours and more
START, END = datetime(2025, 12, 2, 5, tzinfo=timezone.utc), datetime(2025, 12, 3, 4, 59, tzinfo=timezone.utc)
TWO = {"stocks": ["TSLA", "SPY"]}


def played(server: ServerThread, channels: list[str], markets: dict[str, list[str]] = TWO, limit: int = 10_000,
           start: datetime = START, end: datetime = END, **given: str) -> list[Record]:
    """What the handlers get of a history from the server."""
    recorder = Recorder()
    source = History(server.server.history_url, KEYS, queries(markets, channels, start, end, **given), limit=limit)

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

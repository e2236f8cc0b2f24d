"""The local server answers Alpaca's historical data API on its streams' port: alpaca-py's own
historical clients, unmodified, read a made-up day from it, paged as Alpaca pages it, the same
day on every query and every run; and it refuses what Alpaca refuses, as Alpaca does."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import requests
from conftest import FAKE_KEY, FAKE_SECRET, ROOT, ServerThread, script_env

from alpaca_stream.calendar import NEW_YORK
from alpaca_stream.server import history as server_history
from alpaca_stream.server.history import RateLimit
from alpaca_stream.times import rfc3339

pytestmark = pytest.mark.timeout(40)

TRADES = 1_500  # a symbol's trades a day here (and as many quotes): quick to make
KEYS = {"APCA-API-KEY-ID": FAKE_KEY, "APCA-API-SECRET-KEY": FAKE_SECRET}
DAY = {"start": "2025-12-02T05:00:00Z", "end": "2025-12-03T04:59:59.999999999Z"}  # a Tuesday of New York's
SATURDAY = {"start": "2025-12-06T00:00:00Z", "end": "2025-12-06T23:59:59.999999999Z"}  # UTC's: crypto's day
NEW_YORK_SATURDAY = {"start": "2025-12-06T05:00:00Z", "end": "2025-12-07T04:59:59Z"}
CHRISTMAS = {"start": "2025-12-25T05:00:00Z", "end": "2025-12-26T04:59:59Z"}
SPAN = {"start": datetime(2025, 12, 2, tzinfo=NEW_YORK), "end": datetime(2025, 12, 2, 23, 59, 59, 999999, NEW_YORK)}
CONTRACT = "SPY261218C00600000"
HTTP_TIMEOUT = 10  # seconds


@pytest.fixture
def history(make_server: Callable[..., ServerThread]) -> ServerThread:
    return make_server(rate=None, history_trades=TRADES)


def get(server: ServerThread, path: str, headers: dict[str, str] | None = None, **params: Any) -> requests.Response:
    return requests.get(server.server.history_url + path, params=params, timeout=HTTP_TIMEOUT,
                        headers=KEYS if headers is None else headers)


def paged(server: ServerThread, path: str, **params: Any) -> Iterator[dict]:
    """Every page of a query, as Alpaca's paging goes: each page's token asks the next."""
    token = None
    for _ in range(1000):
        answer = get(server, path, **params, **({"page_token": token} if token else {}))
        assert answer.status_code == 200, answer.text
        page = answer.json()
        yield page
        token = page["next_page_token"]
        if token is None:
            return
    raise AssertionError("more than 1000 pages")


def rows(pages: Iterator[dict], key: str) -> list[tuple[str, dict]]:
    """The pages' messages, each after its symbol, in the order given."""
    if key == "news":
        return [(",".join(article["symbols"]), article) for page in pages for article in page["news"]]
    return [(symbol, message) for page in pages for symbol, messages in page[key].items() for message in messages]


def at(text: str) -> datetime:
    return rfc3339(text)


@pytest.mark.parametrize(("path", "symbols", "limit", "extra"), [
    ("/v2/stocks/trades", "SPY,TSLA", 700, {}),
    ("/v2/stocks/quotes", "TSLA,AAPL", 700, {}),
    ("/v2/stocks/bars", "SPY,TSLA", 300, {"timeframe": "1Min"}),
    ("/v1beta3/crypto/us/trades", "BTC/USD,ETH/USD", 700, {}),
    ("/v1beta3/crypto/us/quotes", "BTC/USD", 700, {}),
    ("/v1beta3/crypto/us/bars", "ETH/USD,BTC/USD", 200, {"timeframe": "5Min"}),
    ("/v1beta1/options/trades", CONTRACT, 700, {}),
    ("/v1beta1/options/bars", CONTRACT, 100, {"timeframe": "1Min"}),
])
@pytest.mark.parametrize("sort", ["asc", "desc"])
def test_small_pages_hold_the_messages_of_one_big_page_by_symbol_then_time_once_each(history, path, symbols,
                                                                                      limit, extra, sort):
    key = path.rsplit("/", 1)[1]
    small = list(paged(history, path, symbols=symbols, limit=limit, sort=sort, **DAY, **extra))
    whole = list(paged(history, path, symbols=symbols, limit=10_000, sort=sort, **DAY, **extra))
    assert len(small) > 2 and len(whole) == 1  # several pages, and one
    assert all(sum(map(len, page[key].values())) == limit for page in small[:-1])  # the limit counts across symbols
    got = rows(iter(small), key)
    assert got == rows(iter(whole), key)
    assert [symbol for symbol, _ in got] == sorted(symbol for symbol, _ in got)  # symbol first
    for symbol in set(symbols.split(",")):
        times = [message["t"] for named, message in got if named == symbol]
        assert times, symbol
        assert times == sorted(times, key=at, reverse=sort == "desc") and len(set(times)) == len(times)


@pytest.mark.parametrize("sort", ["asc", "desc"])
def test_a_page_of_bars_is_made_of_a_bounded_number_of_trades_whatever_the_limit(history, monkeypatch, sort):
    # The answer is made within the websocket handshake's 10 s: the bars of a day of 1,000,000
    # trades took 12.6 s as one page. Here a page may make bars of 400 trades (1,500 a day).
    monkeypatch.setattr(server_history, "PAGE_TRADES", 400)
    bars = {"timeframe": "1Min", "sort": sort, **DAY}
    pages = list(paged(history, "/v2/stocks/bars", symbols="SPY,TSLA", limit=10_000, **bars))
    assert len(pages) > 4
    assert all(sum(bar["n"] for _, bar in rows(iter([page]), "bars")) <= 400 for page in pages)
    assert sum(bar["n"] for _, bar in rows(iter(pages), "bars")) == 2 * TRADES
    monkeypatch.setattr(server_history, "PAGE_TRADES", 10**6)
    whole = list(paged(history, "/v2/stocks/bars", symbols="SPY,TSLA", limit=10_000, **bars))
    assert len(whole) == 1 and rows(iter(pages), "bars") == rows(iter(whole), "bars")
    day = list(paged(history, "/v2/stocks/bars", symbols="SPY", limit=10_000, **{**bars, "timeframe": "1Day"}))
    monkeypatch.setattr(server_history, "PAGE_TRADES", 400)  # a bar of more trades is made whole, alone
    assert list(paged(history, "/v2/stocks/bars", symbols="SPY", limit=10_000, **{**bars, "timeframe": "1Day"})) == day


def test_news_pages_of_fifty_hold_every_article_once_in_time_order(history):
    month = {"start": "2025-11-01T00:00:00Z", "end": "2025-11-30T23:59:59Z"}
    for sort in ("asc", "desc"):
        small = rows(paged(history, "/v1beta1/news", symbols="AAPL,TSLA", limit=7, sort=sort, **month), "news")
        pages = rows(paged(history, "/v1beta1/news", symbols="AAPL,TSLA", limit=50, sort=sort, **month), "news")
        assert small == pages and len(pages) > 100
        assert len({article["id"] for _, article in pages}) == len(pages)
        times = [article["created_at"] for _, article in pages]
        assert times == sorted(times, key=at, reverse=sort == "desc")
        assert {symbols for symbols, _ in pages} == {"AAPL", "TSLA"}


def test_alpaca_pys_historical_clients_unmodified_read_each_kind_of_history(make_server):
    from alpaca.data.historical import (
        CryptoHistoricalDataClient,
        NewsClient,
        OptionHistoricalDataClient,
        StockHistoricalDataClient,
    )
    from alpaca.data.requests import (
        CryptoBarsRequest,
        CryptoQuoteRequest,
        CryptoTradesRequest,
        NewsRequest,
        OptionBarsRequest,
        OptionTradesRequest,
        StockBarsRequest,
        StockQuotesRequest,
        StockTradesRequest,
    )
    from alpaca.data.timeframe import TimeFrame

    server = make_server(rate=None, history_trades=6_000)  # two symbols' day: more than alpaca-py's page of 10,000
    url = server.server.history_url
    span = SPAN  # DAY's, for alpaca-py
    stocks = StockHistoricalDataClient(FAKE_KEY, FAKE_SECRET, url_override=url)
    trades = stocks.get_stock_trades(StockTradesRequest(symbol_or_symbols=["TSLA", "SPY"], **span))
    whole = rows(paged(server, "/v2/stocks/trades", symbols="SPY,TSLA", limit=10_000, **DAY), "trades")
    assert [(trade.symbol, trade.id, trade.price) for symbol in ("SPY", "TSLA") for trade in trades[symbol]] == \
        [(symbol, trade["i"], trade["p"]) for symbol, trade in whole]
    assert len(whole) == 12_000
    for symbol in ("SPY", "TSLA"):
        new_york = [trade.timestamp.astimezone(NEW_YORK) for trade in trades[symbol]]
        assert new_york[0].hour >= 4 and new_york[-1].hour < 20 and {t.date().day for t in new_york} == {2}
    spy = [trade.price for trade in trades["SPY"]]
    assert min(spy) > 500 and max(spy) < 700  # near the demo's SPY, 600
    quotes = stocks.get_stock_quotes(StockQuotesRequest(symbol_or_symbols="SPY", **span))["SPY"]
    assert len(quotes) == 6_000 and all(quote.bid_price < quote.ask_price for quote in quotes)
    bars = stocks.get_stock_bars(StockBarsRequest(symbol_or_symbols="SPY", timeframe=TimeFrame.Minute, **span))["SPY"]
    assert sum(bar.trade_count for bar in bars) == 6_000 and sum(bar.volume for bar in bars) == \
        sum(trade.size for trade in trades["SPY"])
    for bar in bars[:50]:  # each bar is its minute's trades
        minute = [trade for trade in trades["SPY"] if bar.timestamp <= trade.timestamp < bar.timestamp +
                  timedelta(minutes=1)]
        assert (bar.open, bar.close, bar.high, bar.low) == (minute[0].price, minute[-1].price,
                                                            max(t.price for t in minute), min(t.price for t in minute))
    week = {"start": datetime(2025, 11, 24, tzinfo=timezone.utc), "end": datetime(2025, 11, 30, tzinfo=timezone.utc)}
    daily = stocks.get_stock_bars(StockBarsRequest(symbol_or_symbols="SPY", timeframe=TimeFrame.Day, **week))["SPY"]
    assert [bar.timestamp.astimezone(NEW_YORK).day for bar in daily] == [24, 25, 26, 28]  # Thanksgiving closed

    crypto = CryptoHistoricalDataClient(url_override=url)  # crypto's history needs no keys
    pair = {"symbol_or_symbols": "BTC/USD", **span}
    pair_trades = crypto.get_crypto_trades(CryptoTradesRequest(**pair))["BTC/USD"]
    assert 5_000 < len(pair_trades) < 7_000  # a day, across two of UTC's
    assert crypto.get_crypto_quotes(CryptoQuoteRequest(**pair))["BTC/USD"][0].ask_price > 10_000
    hours = crypto.get_crypto_bars(CryptoBarsRequest(**pair, timeframe=TimeFrame.Hour))["BTC/USD"]
    assert len(hours) == 24 and sum(bar.trade_count for bar in hours) == len(pair_trades)

    options = OptionHistoricalDataClient(FAKE_KEY, FAKE_SECRET, url_override=url)
    option_trades = options.get_option_trades(OptionTradesRequest(symbol_or_symbols=CONTRACT, **span))[CONTRACT]
    assert len(option_trades) == 6_000
    assert {trade.timestamp.astimezone(NEW_YORK).hour for trade in option_trades} == set(range(9, 16))
    option_bars = options.get_option_bars(OptionBarsRequest(symbol_or_symbols=CONTRACT, timeframe=TimeFrame.Hour,
                                                            **span))[CONTRACT]
    assert sum(bar.trade_count for bar in option_bars) == 6_000

    news = NewsClient(FAKE_KEY, FAKE_SECRET, url_override=url)
    month = NewsRequest(symbols="AAPL", start=datetime(2025, 11, 1), end=datetime(2025, 12, 1), sort="asc")
    articles = news.get_news(month).data["news"]
    assert len(articles) == 240 and all(article.symbols == ["AAPL"] for article in articles)  # 8 a day, 5 pages
    assert [article.created_at for article in articles] == sorted(article.created_at for article in articles)


def test_the_same_query_gives_the_same_answer_on_every_query_and_every_run(history):
    query = {"symbols": "SPY,BTC/USD", "limit": 1000}
    first = get(history, "/v2/stocks/trades", symbols="AAPL", limit=2000, **DAY).json()
    assert get(history, "/v2/stocks/trades", symbols="AAPL", limit=2000, **DAY).json() == first
    crypto = get(history, "/v1beta3/crypto/us/quotes", **query, **SATURDAY).json()
    alone = subprocess.Popen([sys.executable, "-m", "alpaca_stream.server", "--port", "0", "-q",
                              "--history-trades", str(TRADES)], cwd=ROOT, env=script_env(), text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert alone.stdout is not None
        port = alone.stdout.readline().rsplit(":", 1)[1].split("/")[0]  # its first line: ws://127.0.0.1:PORT/v2/iex
        url = f"http://127.0.0.1:{port}"
        again = requests.get(url + "/v2/stocks/trades", params={"symbols": "AAPL", "limit": 2000, **DAY},
                             headers=KEYS, timeout=HTTP_TIMEOUT).json()
        assert again == first and len(first["trades"]["AAPL"]) == TRADES
        assert requests.get(url + "/v1beta3/crypto/us/quotes", params={**query, **SATURDAY},
                            timeout=HTTP_TIMEOUT).json() == crypto
    finally:
        alone.terminate()
        alone.wait(timeout=10)


@pytest.mark.parametrize(("path", "symbol", "midnight"), [
    ("/v2/stocks/trades", "SPY", "05:00:00Z"),  # New York's days, Monday to the next Tuesday: a weekend
    ("/v1beta3/crypto/us/trades", "BTC/USD", "00:00:00Z"),  # UTC's, every day
])
def test_a_made_up_day_opens_near_where_the_trading_day_before_it_closed(history, path, symbol, midnight):
    # Before, each day was a walk of its own from near the demo's start price: SPY went 618, 588,
    # 628 from one close to the next open, and a run of days was its jumps.
    def edge(day: int, sort: str) -> float:
        start = f"2025-12-{day:02}T{midnight}"
        end = (rfc3339(start) + timedelta(days=1, microseconds=-1)).isoformat()
        answer = get(history, path, symbols=symbol, limit=1, sort=sort, start=start, end=end).json()
        return answer["trades"][symbol][0]["p"] if answer["trades"] else math.nan

    days = [(day, edge(day, "asc"), edge(day, "desc")) for day in range(1, 10)]
    trading = [(day, first, last) for day, first, last in days if not math.isnan(first)]
    assert len(trading) == (7 if "stocks" in path else 9)
    gaps = [abs(opens / closed - 1) for (_, _, closed), (_, opens, _) in zip(trading, trading[1:])]
    assert max(gaps) < 0.002, gaps


def test_a_weekend_or_a_holiday_has_no_stock_history_and_a_whole_day_of_crypto(history):
    for closed in (NEW_YORK_SATURDAY, CHRISTMAS):
        for path in ("/v2/stocks/trades", "/v2/stocks/quotes", "/v1beta1/options/trades"):
            symbol = CONTRACT if "options" in path else "SPY"
            assert get(history, path, symbols=symbol, **closed).json() == {path.rsplit("/", 1)[1]: {},
                                                                            "next_page_token": None}
    pairs = get(history, "/v1beta3/crypto/us/trades", symbols="ETH/USD", limit=10_000, **SATURDAY).json()
    times = [at(trade["t"]) for trade in pairs["trades"]["ETH/USD"]]
    assert len(times) == TRADES and times[0].hour == 0 and times[-1].hour == 23


def test_nothing_later_than_now_and_a_day_under_way_only_up_to_now(history):
    now = datetime.now(timezone.utc)
    later = {"start": (now - timedelta(hours=2)).isoformat(), "end": (now + timedelta(days=2)).isoformat()}
    trades = get(history, "/v1beta3/crypto/us/trades", symbols="BTC/USD", limit=10_000, **later).json()["trades"]
    assert trades and at(trades["BTC/USD"][-1]["t"]) <= datetime.now(timezone.utc)


@pytest.mark.parametrize(("params", "message"), [
    ({"start": "2025-12-02T25:00:00Z"}, "invalid start"),
    ({"end": "yesterday"}, "invalid end"),
    ({"limit": 0}, "invalid limit"),
    ({"limit": 10_001}, "invalid limit"),
    ({"sort": "up"}, "invalid sort"),
    ({"feed": "nasdaq"}, "invalid feed"),
])
def test_a_bad_parameter_is_422_with_alpacas_body(history, params, message):
    answer = get(history, "/v2/stocks/trades", symbols="SPY", **params)
    assert answer.status_code == 422 and answer.json()["message"].startswith(message)


def test_a_bad_symbol_list_is_400_and_a_bad_timeframe_422(history):
    assert get(history, "/v2/stocks/trades", symbols="").status_code == 400
    assert get(history, "/v1beta3/crypto/us/trades", symbols="BTCUSD").status_code == 400
    assert get(history, "/v2/stocks/bars", symbols="SPY", timeframe="7Sec").status_code == 422


def test_no_keys_is_401_and_keys_the_server_does_not_take_403_as_alpaca_answers(make_server):
    server = make_server(rate=None, history_trades=TRADES, keys=(FAKE_KEY, FAKE_SECRET))
    assert get(server, "/v2/stocks/trades", headers={}, symbols="SPY").status_code == 401
    wrong = {"APCA-API-KEY-ID": FAKE_KEY, "APCA-API-SECRET-KEY": "FAKE-WRONG-SECRET"}
    assert get(server, "/v2/stocks/trades", headers=wrong, symbols="SPY").status_code == 403
    assert get(server, "/v1beta3/crypto/us/trades", headers=wrong, symbols="BTC/USD").status_code == 403
    assert get(server, "/v1beta3/crypto/us/trades", headers={}, symbols="BTC/USD").status_code == 200
    assert get(server, "/v2/stocks/trades", symbols="SPY").status_code == 200


def test_recent_sip_data_is_403_for_a_free_plan_and_older_or_iex_is_served(make_server):
    from alpaca.common.exceptions import APIError
    from alpaca.data.historical import StockHistoricalDataClient
    from alpaca.data.requests import StockTradesRequest

    free, paid = make_server(rate=None, history_trades=TRADES), make_server(rate=None, history_trades=TRADES, sip=True)
    recent = (datetime.now(timezone.utc) - timedelta(minutes=10)).isoformat()
    older = (datetime.now(timezone.utc) - timedelta(minutes=20)).isoformat()
    refused = get(free, "/v2/stocks/trades", symbols="SPY", feed="sip", end=recent)
    assert refused.status_code == 403
    assert refused.json() == {"message": "subscription does not permit querying recent SIP data"}
    assert get(free, "/v2/stocks/trades", symbols="SPY", feed="sip").status_code == 403  # the end is now
    assert get(free, "/v2/stocks/trades", symbols="SPY", feed="sip", end=older).status_code == 200
    assert get(free, "/v2/stocks/trades", symbols="SPY", feed="iex", end=recent).status_code == 200
    assert get(paid, "/v2/stocks/trades", symbols="SPY", feed="sip", end=recent).status_code == 200
    client = StockHistoricalDataClient(FAKE_KEY, FAKE_SECRET, url_override=free.server.history_url)
    with pytest.raises(APIError, match="recent SIP data"):
        client.get_stock_trades(StockTradesRequest(symbol_or_symbols="SPY", feed="sip"))


def test_past_the_rate_limit_is_429_with_alpacas_headers(make_server):
    server = make_server(rate=None, history_trades=TRADES, history_rate_limit=RateLimit(calls=1, window=60))
    assert get(server, "/v2/stocks/trades", symbols="SPY").headers["X-RateLimit-Remaining"] == "0"
    limited = get(server, "/v2/stocks/trades", symbols="SPY")
    assert limited.status_code == 429
    assert limited.headers["X-RateLimit-Limit"] == "1" and limited.headers["X-RateLimit-Remaining"] == "0"
    assert 0 < int(limited.headers["X-RateLimit-Reset"]) - time.time() <= 61  # Unix seconds: the window's end


@pytest.mark.timeout(30)
def test_alpaca_py_gets_through_a_429_by_its_own_retry_and_loses_no_page(make_server):
    from alpaca.data.historical import StockHistoricalDataClient
    from alpaca.data.requests import StockTradesRequest

    # One call a minute, and one 429 at most: alpaca-py's second page, asked at once, is refused;
    # its retry, 3 s later, is not, nor the pages after it (alpaca-py 0.33.1 asks pages of 1,000,
    # the newest of 10,000: refused each, they took 3 s a page, past the test's deadline).
    limit = RateLimit(calls=1, window=60, most_refused=1)
    server = make_server(rate=None, history_trades=6_000, history_rate_limit=limit)
    client = StockHistoricalDataClient(FAKE_KEY, FAKE_SECRET, url_override=server.server.history_url)
    request = StockTradesRequest(symbol_or_symbols=["SPY", "TSLA"], **SPAN)
    started = time.monotonic()
    trades = client.get_stock_trades(request)
    assert limit.refused == 1 and time.monotonic() - started >= 3  # its wait of 3 s, then its page
    assert [len(trades[symbol]) for symbol in ("SPY", "TSLA")] == [6_000, 6_000]
    assert len({trade.id for trade in trades["TSLA"]}) == 6_000

"""The local server plays Alpaca's crypto stream at /v1beta3/crypto/us too (pairs, fractional
sizes, order books), its options stream at /v1beta1/indicative and opra (OCC symbols, msgpack
only) and its news stream at /v1beta1/news, for alpaca-py's own CryptoDataStream,
OptionDataStream and NewsDataStream and for a raw client; the stock endpoint beside them is as
before."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from typing import Any

import msgpack
import pytest
from conftest import FAKE_KEY, FAKE_SECRET, until, within
from websockets.asyncio.client import ClientConnection, connect

from alpaca_stream.channels import CRYPTO_CHANNELS, wanted
from alpaca_stream.server import ERRORS, AlpacaStreamServer

MSGPACK = {"Content-Type": "application/msgpack"}  # as alpaca-py asks: else JSON text frames


async def login(url: str) -> ClientConnection:
    """A raw client connected and authenticated at url."""
    client = await connect(url, additional_headers=MSGPACK)
    assert msgpack.unpackb(await client.recv()) == [{"T": "success", "msg": "connected"}]
    await client.send(msgpack.packb({"action": "auth", "key": FAKE_KEY, "secret": FAKE_SECRET}))
    assert msgpack.unpackb(await client.recv()) == [{"T": "success", "msg": "authenticated"}]
    return client


async def ask(client: ClientConnection, action: str = "subscribe", **channels: list[str]) -> dict:
    """Subscribe or unsubscribe; the answer, in a frame of its own (data that streamed before it
    is passed over)."""
    await client.send(msgpack.packb({"action": action, **channels}))
    while True:
        frame: list[dict] = msgpack.unpackb(await client.recv())
        if frame[0]["T"] in ("subscription", "error"):
            assert len(frame) == 1, frame
            return frame[0]


async def data_until(client: ClientConnection, done: Any) -> list[dict]:
    """Messages, frame after frame, until done(messages so far) is true."""
    messages: list[dict] = []
    while not done(messages):
        messages += msgpack.unpackb(await client.recv())
    return messages


def of(kind: str, messages: list[dict]) -> list[dict]:
    return [message for message in messages if message["T"] == kind]


def test_alpaca_pys_own_crypto_stream_gets_fractional_trades_quotes_and_each_pairs_whole_book_first():
    from alpaca.data.live import CryptoDataStream

    got: dict[str, list[Any]] = defaultdict(list)

    async def keep(message: Any) -> None:
        got[type(message).__name__].append(message)

    async def scenario() -> None:
        async with AlpacaStreamServer(rate=200, seed=21) as server:
            stream = CryptoDataStream(FAKE_KEY, FAKE_SECRET, url_override=server.crypto_url)
            for subscribe in (stream.subscribe_trades, stream.subscribe_quotes, stream.subscribe_orderbooks):
                subscribe(keep, "BTC/USD", "ETH/USD")
            running = asyncio.create_task(stream._run_forever())
            try:
                await until(lambda: all(len({m.symbol for m in got[kind]}) == 2 and len(got[kind]) >= 20
                                        for kind in ("Trade", "Quote", "Orderbook")), "every kind, for both pairs", 15)
            finally:
                await stream.stop_ws()
                await asyncio.wait_for(running, 10)
            assert server.connections[0].market == "crypto"

    within(scenario(), 30)
    trades, quotes, books = got["Trade"], got["Quote"], got["Orderbook"]
    assert any(trade.size != int(trade.size) for trade in trades) and all(0 < trade.size < 1 for trade in trades)
    assert 50_000 < next(t.price for t in trades if t.symbol == "BTC/USD") < 150_000
    assert 1_000 < next(t.price for t in trades if t.symbol == "ETH/USD") < 10_000
    assert all(quote.bid_price < quote.ask_price and quote.bid_exchange is None for quote in quotes)
    for symbol in ("BTC/USD", "ETH/USD"):
        theirs = [book for book in books if book.symbol == symbol]
        assert theirs[0].reset is True and len(theirs[0].bids) == len(theirs[0].asks) == 10
        assert not any(book.reset for book in theirs[1:])
        assert max(level.price for level in theirs[0].bids) < min(level.price for level in theirs[0].asks)


def test_the_crypto_subscription_answer_lists_the_whole_set_of_cryptos_own_channels_only():
    async def scenario() -> None:
        async with AlpacaStreamServer(rate=100, seed=22) as server:
            client = await login(server.crypto_url)
            answer = await ask(client, trades=["BTC/USD"], orderbooks=["ETH/USD"])
            assert list(answer) == ["T", *CRYPTO_CHANNELS]  # no statuses, lulds, corrections, cancelErrors
            answer = await ask(client, quotes=["BTC/USDT"], trades=["ETH/USD"])
            assert answer == {"T": "subscription", "trades": ["BTC/USD", "ETH/USD"], "quotes": ["BTC/USDT"],
                              "bars": [], "updatedBars": [], "dailyBars": [], "orderbooks": ["ETH/USD"]}
            answer = await ask(client, "unsubscribe", trades=["BTC/USD"])
            assert answer["trades"] == ["ETH/USD"] and answer["orderbooks"] == ["ETH/USD"]

    within(scenario())


def test_crypto_trades_have_fractional_sizes_and_a_taker_side_and_quotes_no_exchanges():
    async def scenario() -> None:
        async with AlpacaStreamServer(rate=300, seed=23) as server:
            client = await login(server.crypto_url)
            await ask(client, trades=["*"], quotes=["BTC/USD"])
            messages = await data_until(client, lambda m: len(of("t", m)) >= 100 and len(of("q", m)) >= 20)
        for trade in of("t", messages):
            assert set(trade) == {"T", "S", "p", "s", "t", "i", "tks"}  # no x, c, z
            assert isinstance(trade["s"], float) and trade["tks"] in ("B", "S") and trade["p"] > 0
        assert {trade["S"] for trade in of("t", messages)} >= {"BTC/USD", "ETH/USD"}  # "*": a few pairs
        for quote in of("q", messages):
            assert set(quote) == {"T", "S", "bp", "bs", "ap", "as", "t"}
            assert quote["bp"] < quote["ap"] and isinstance(quote["bs"], float)

    within(scenario())


def test_an_order_books_changes_applied_to_its_whole_book_keep_the_best_bid_below_the_best_ask():
    async def scenario() -> None:
        async with AlpacaStreamServer(rate=300, seed=24) as server:
            client = await login(server.crypto_url)
            await ask(client, orderbooks=["BTC/USD", "DOGE/USD"])
            messages = await data_until(client, lambda m: len(of("o", m)) >= 300)
            books: dict[str, dict[str, dict[float, float]]] = {}
            for message in of("o", messages):
                if message.get("r"):
                    books[message["S"]] = {"b": {}, "a": {}}
                book = books[message["S"]]  # a change before its whole book: KeyError
                for side in ("b", "a"):
                    for level in message[side]:
                        if level["s"] == 0:
                            del book[side][level["p"]]  # a level removed was there
                        else:
                            book[side][level["p"]] = level["s"]
                assert max(book["b"]) < min(book["a"]) and len(book["b"]) == len(book["a"]) == 10
            assert set(books) == {"BTC/USD", "DOGE/USD"}
            assert sum(1 for message in of("o", messages) if message.get("r")) == 2  # once each
            # Subscribed again, a pair's whole book comes again.
            await ask(client, "unsubscribe", orderbooks=["DOGE/USD"])
            await ask(client, orderbooks=["DOGE/USD"])
            again = await data_until(client, lambda m: any(o["S"] == "DOGE/USD" for o in of("o", m)))
            assert next(o for o in of("o", again) if o["S"] == "DOGE/USD").get("r") is True

    within(scenario())


def test_crypto_bars_add_up_their_fractional_trades():
    async def scenario() -> None:
        async with AlpacaStreamServer(rate=200, seed=25) as server:
            client = await login(server.crypto_url)
            await ask(client, trades=["ETH/USD"], bars=["ETH/USD"])
            messages = await data_until(client, lambda m: len(of("t", m)) >= 20)
            server.cue("bar", "halt")  # a stock market's halt: nothing on crypto
            messages += await data_until(client, lambda m: of("b", m))
        bar = of("b", messages)[0]
        trades = [t for t in of("t", messages[:messages.index(bar)]) if t["t"].seconds >= bar["t"].seconds]
        assert bar["v"] == pytest.approx(sum(t["s"] for t in trades)) and bar["n"] == len(trades)
        assert isinstance(bar["v"], float) and not of("s", messages)

    within(scenario())


def test_a_stock_symbol_on_the_crypto_endpoint_and_a_pair_on_the_stock_endpoint_are_refused():
    async def scenario() -> None:
        async with AlpacaStreamServer(rate=100, seed=26) as server:
            invalid = {"T": "error", "code": 400, "msg": ERRORS[400]}
            crypto = await login(server.crypto_url)
            assert await ask(crypto, trades=["SPY"]) == invalid
            assert await ask(crypto, trades=["BTC/USD"], statuses=["BTC/USD"]) == {
                "T": "subscription", "trades": ["BTC/USD"], "quotes": [], "bars": [], "updatedBars": [],
                "dailyBars": [], "orderbooks": []}  # a channel crypto lacks is not taken
            stocks = await login(server.url)
            assert server.url.endswith("/v2/iex")
            assert await ask(stocks, trades=["BTC/USD"]) == invalid
            assert await ask(stocks, orderbooks=["SPY"], trades=["SPY"]) == {
                "T": "subscription", "trades": ["SPY"], "quotes": [], "bars": [], "updatedBars": [], "dailyBars": [],
                "statuses": [], "lulds": [], "imbalances": [], "corrections": ["SPY"], "cancelErrors": ["SPY"]}
            assert [record.market for record in server.connections] == ["crypto", "stocks"]

    within(scenario())



def test_more_than_10_order_books_are_refused_with_405_and_the_books_held_stay():
    async def scenario() -> None:
        async with AlpacaStreamServer(rate=100, seed=26) as server:
            crypto = await login(server.crypto_url)
            ten = [f"C{n}/USD" for n in range(10)]
            assert (await ask(crypto, orderbooks=ten))["orderbooks"] == ten
            assert await ask(crypto, orderbooks=["ETH/USD"]) == {"T": "error", "code": 405, "msg": ERRORS[405]}
            assert server.connections[0].subscriptions["orderbooks"] == ten

    within(scenario())

CALL, PUT = "SPY261218C00600000", "SPY261218P00600000"


def test_alpaca_pys_own_option_stream_gets_trades_in_contracts_and_quotes_with_one_condition():
    from alpaca.data.live import OptionDataStream

    got: dict[str, list[Any]] = defaultdict(list)

    async def keep(message: Any) -> None:
        got[type(message).__name__].append(message)

    async def scenario() -> None:
        async with AlpacaStreamServer(rate=200, seed=25) as server:
            assert server.options_url.endswith("/v1beta1/indicative")
            stream = OptionDataStream(FAKE_KEY, FAKE_SECRET, url_override=server.options_url)
            stream.subscribe_trades(keep, CALL, PUT)
            stream.subscribe_quotes(keep, CALL, PUT)
            running = asyncio.create_task(stream._run_forever())
            try:
                await until(lambda: all(len({m.symbol for m in got[kind]}) == 2 and len(got[kind]) >= 10
                                        for kind in ("Trade", "Quote")), "trades and quotes of both contracts", 15)
            finally:
                await stream.stop_ws()
                await asyncio.wait_for(running, 10)
            assert [record.market for record in server.connections] == ["options"]

    within(scenario(), 30)
    trades, quotes = got["Trade"], got["Quote"]
    assert all(trade.size == int(trade.size) >= 1 and trade.exchange for trade in trades)  # alpaca-py: a float
    assert all(isinstance(trade.conditions, str) and len(trade.conditions) == 1 for trade in trades)
    assert all(0 < quote.bid_price < quote.ask_price and quote.bid_exchange and quote.ask_exchange
               and isinstance(quote.conditions, str) for quote in quotes)


def test_the_options_stream_refuses_bars_star_quotes_json_and_opra_without_the_plan_as_alpaca_does():
    async def scenario() -> None:
        async with AlpacaStreamServer(rate=100, seed=27) as server:
            options = await login(server.options_url)
            assert await ask(options, trades=[CALL], quotes=[PUT]) == {"T": "subscription", "trades": [CALL],
                                                                       "quotes": [PUT]}
            assert await ask(options, bars=[CALL]) == {"T": "error", "code": 410, "msg": ERRORS[410]}
            assert await ask(options, quotes=["*"]) == {"T": "error", "code": 413, "msg": ERRORS[413]}
            assert await ask(options, trades=["SPY"]) == {"T": "error", "code": 400, "msg": ERRORS[400]}
            assert (await ask(options, trades=["*"]))["trades"] == [CALL, "*"]
            await options.close()
            async with connect(server.options_url) as as_json:  # no Content-Type: msgpack
                assert json.loads(await as_json.recv()) == [{"T": "success", "msg": "connected"}]
                assert json.loads(await as_json.recv()) == [{"T": "error", "code": 412, "msg": ERRORS[412]}]
                await asyncio.wait_for(as_json.wait_closed(), 5)
            opra = await connect(server.options_url.replace("indicative", "opra"), additional_headers=MSGPACK)
            await opra.recv()
            await opra.send(msgpack.packb({"action": "auth", "key": FAKE_KEY, "secret": FAKE_SECRET}))
            assert msgpack.unpackb(await opra.recv()) == [{"T": "error", "code": 409, "msg": ERRORS[409]}]
            await opra.close()

    within(scenario())

def test_alpaca_pys_own_news_stream_gets_articles_about_the_symbols_asked_with_every_field():
    from alpaca.data.live import NewsDataStream

    got: list[Any] = []

    async def keep(article: Any) -> None:
        got.append(article)

    async def scenario() -> None:
        async with AlpacaStreamServer(rate=20, seed=22) as server:
            stream = NewsDataStream(FAKE_KEY, FAKE_SECRET, url_override=server.news_url)
            stream.subscribe_news(keep, "AAPL", "BTCUSD")
            running = asyncio.create_task(stream._run_forever())
            try:
                await until(lambda: len(got) >= 2, "two articles", 15)
            finally:
                await stream.stop_ws()
                await asyncio.wait_for(running, 10)
            assert server.connections[0].market == "news"

    within(scenario(), 30)
    for article in got:
        assert set(article.symbols) <= {"AAPL", "BTCUSD"} and article.headline and article.content.startswith("<p>")
        assert article.created_at <= article.updated_at and article.url.startswith("https://")



def test_a_news_subscription_of_symbols_wants_the_articles_that_name_one_of_them():
    about = [{"T": "n", "id": n, "symbols": symbols, "headline": "h"} for n, symbols in
             enumerate((["TSLA"], ["SPY", "AAPL"], ["BTCUSD"], []))]
    assert [article["id"] for article in wanted({"news": {"AAPL", "TSLA"}}, about)] == [0, 1]
    assert [article["id"] for article in wanted({"news": {"*"}}, about)] == [0, 1, 2, 3]
    assert wanted({"trades": {"TSLA"}}, about) == []

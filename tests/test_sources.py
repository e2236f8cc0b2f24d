"""Several sources side by side in one event loop, under the supervisor's one policy: each mends
its own faults without disturbing the others, what one cannot mend ends them all, and the
stream can be awaited from a program's own event loop, already running (a notebook, a web app),
installing nothing of its own there."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from contextlib import suppress

import pytest
from alpaca.data import models
from conftest import KEYS, ROOT, as_received, run, until

from alpaca_stream import (
    Book,
    CryptoQuote,
    CryptoStream,
    CryptoTrade,
    Orderbook,
    Record,
    Session,
    StockStream,
    Trade,
    stream,
)
from alpaca_stream.errors import AlpacaRefused
from alpaca_stream.outputs.terminal import format_text
from alpaca_stream.server import AlpacaStreamServer, Faults
from alpaca_stream.sources.recording import Recording

RECORDING = ROOT / "tests" / "data" / "session.jsonl"  # 55 trades, 2 corrections, 3 cancels


def kept_by_symbol() -> tuple[dict[str, list[dict]], Callable]:
    got: dict[str, list[dict]] = {}

    async def keep(trade: Record) -> None:
        got.setdefault(trade.symbol, []).append(dict(trade))

    return got, keep


def trades_sent(server: AlpacaStreamServer) -> list[dict]:
    return [as_received(message) for connection in server.connections for message in connection.messages
            if message["T"] == "t"]


def test_two_streams_side_by_side_one_dropped_each_delivers_every_message_once_in_order():
    got, keep = kept_by_symbol()

    async def scenario() -> tuple[AlpacaStreamServer, AlpacaStreamServer]:
        async with AlpacaStreamServer(rate=400, seed=3) as dropping, AlpacaStreamServer(rate=400, seed=4) as steady:
            dropping.plan(Faults(drop_after=200))
            task = asyncio.create_task(stream(StockStream(["SPY"], keys=KEYS, url=dropping.url),
                                              StockStream(["TSLA"], keys=KEYS, url=steady.url),
                                              handlers={"trade": keep}))
            try:
                await until(lambda: len(dropping.connections) == 2 and len(got.get("SPY", [])) >= 300
                            and len(got.get("TSLA", [])) >= 300, "both streaming, one of them again")
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            return dropping, steady

    dropping, steady = run(scenario())
    assert len(steady.connections) == 1  # the other stream's reconnect did not disturb it
    for symbol, server in (("SPY", dropping), ("TSLA", steady)):
        sent = trades_sent(server)
        assert got[symbol] == sent[:len(got[symbol])], symbol  # nothing lost, doubled or reordered
    assert len(dropping.connections[0].trade_ids) < len(got["SPY"])  # some came after the reconnect


def test_stocks_and_crypto_in_one_loop_the_crypto_connection_dropped_each_delivers_every_message_once(caplog):
    caplog.set_level(logging.INFO, logger="alpaca_stream")
    got, keep = kept_by_symbol()
    records: list[Record] = []

    async def note(record: Record) -> None:
        records.append(record)

    async def scenario() -> AlpacaStreamServer:
        async with AlpacaStreamServer(rate=400, seed=6) as server:  # both endpoints, as Alpaca's host
            crypto = CryptoStream(["BTC/USD"], ["trades", "quotes"], keys=KEYS, url=server.crypto_url)
            server.plan(Faults(), Faults(drop_after=150))  # the second to connect is dropped
            task = asyncio.create_task(stream(StockStream(["SPY"], keys=KEYS, url=server.url), crypto,
                                              handlers={"trade": keep, "quote": note}))
            try:
                await until(lambda: len(server.connections) == 3 and len(got.get("SPY", [])) >= 300
                            and len(got.get("BTC/USD", [])) >= 300 and records, "both streaming, one again")
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            return server

    server = run(scenario())
    by_market = {market: [c for c in server.connections if c.market == market] for market in ("stocks", "crypto")}
    assert len(by_market["stocks"]) == 1 and len(by_market["crypto"]) == 2  # the drop disturbed only crypto
    for symbol, connections in (("SPY", by_market["stocks"]), ("BTC/USD", by_market["crypto"])):
        sent = [as_received(m) for connection in connections for m in connection.messages if m["T"] == "t"]
        assert got[symbol] == sent[:len(got[symbol])], symbol  # nothing lost, doubled or reordered
    assert len(by_market["crypto"][0].trade_ids) < len(got["BTC/USD"])  # some came after the reconnect
    # The log says which stream went and came back.
    assert "the crypto stream: connection lost" in caplog.text
    assert "reconnecting the crypto stream in " in caplog.text


def test_a_crypto_record_has_the_fields_the_crypto_stream_sends_named_as_alpaca_pys_model_names_them():
    trades: list[Record] = []
    quotes: list[Record] = []

    async def keep(into: list[Record], record: Record) -> None:
        into.append(record)

    async def scenario() -> None:
        async with AlpacaStreamServer(rate=200, seed=7) as server:
            crypto = CryptoStream(["BTC/USD", "ETH/USD"], ["trades", "quotes"], keys=KEYS, url=server.crypto_url)
            task = asyncio.create_task(stream(crypto, handlers={"trade": lambda r: keep(trades, r),
                                                                "quote": lambda r: keep(quotes, r)}))
            try:
                await until(lambda: len(trades) >= 20 and len(quotes) >= 20, "crypto trades and quotes")
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    run(scenario())
    assert {type(record) for record in trades} == {CryptoTrade} and {type(r) for r in quotes} == {CryptoQuote}
    assert all(record.market == "crypto" for record in trades + quotes) and Trade.market == "stocks"
    assert any(trade.size != int(trade.size) for trade in trades)  # fractions of a coin
    assert all(trade["tks"] in "BS" for trade in trades)  # the taker side, kept under its wire key
    for record, model in ((trades[0], models.Trade), (quotes[0], models.Quote)):
        parsed = model(record.symbol, dict(record))
        for name in record.fields:
            assert getattr(record, name) == getattr(parsed, name), name
        assert not hasattr(record, "exchange") and not hasattr(record, "tape")  # none on the crypto stream
        line = format_text(record)
        assert "(incomplete)" not in line and record.symbol in line and "\n" not in line and len(line) <= 80, line


def test_an_order_book_record_comes_with_its_pairs_book_as_it_stands_after_that_message():
    books: list[tuple[Orderbook, dict, dict]] = []  # each record, and its book's bids and asks then

    async def keep(orderbook: Record) -> None:
        assert isinstance(orderbook, Orderbook)
        books.append((orderbook, dict(orderbook.book.bids), dict(orderbook.book.asks)))

    async def scenario() -> AlpacaStreamServer:
        async with AlpacaStreamServer(rate=200, seed=8) as server:
            crypto = CryptoStream(["BTC/USD", "ETH/USD"], ["orderbooks"], keys=KEYS, url=server.crypto_url)
            task = asyncio.create_task(stream(crypto, handlers={"orderbook": keep}))
            try:
                await until(lambda: len(books) >= 60, "60 order book messages")
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            return server

    server = run(scenario())
    sent = [as_received(m) for m in server.connections[0].messages if m["T"] == "o"]
    expected: dict[str, Book] = {}
    for (record, bids, asks), message in zip(books, sent):
        assert record == message  # the message as Alpaca sent it: the levels that changed
        book = expected.setdefault(message["S"], Book())
        book.apply(message)  # the book, built here from what the server sent
        assert (bids, asks) == (book.bids, book.asks), record.symbol
        assert max(bids) < min(asks)
    first = {symbol: next(record for record, _, _ in books if record.symbol == symbol) for symbol in expected}
    assert all(record.reset for record in first.values())  # each pair's whole book first
    assert any(not record.reset and record.bids + record.asks for record, _, _ in books)
    assert books[-1][0].book.best_bid == max(books[-1][1].items())


def test_a_book_takes_the_whole_book_on_reset_and_a_size_of_0_away():
    book = Book()
    book.apply({"r": True, "b": [{"p": 99.0, "s": 1.0}, {"p": 98.0, "s": 2.0}], "a": [{"p": 101.0, "s": 0.5}]})
    book.apply({"b": [{"p": 99.0, "s": 0}, {"p": 99.5, "s": 0.25}], "a": []})
    assert (book.bids, book.best_bid, book.best_ask) == ({98.0: 2.0, 99.5: 0.25}, (99.5, 0.25), (101.0, 0.5))
    book.apply({"r": True, "b": [], "a": [{"p": 102.0, "s": 1.0}]})
    assert (book.bids, book.asks, book.best_bid) == ({}, {102.0: 1.0}, None)


def test_a_refusal_that_retrying_cannot_cure_in_one_stream_ends_them_all_and_is_raised():
    got, keep = kept_by_symbol()

    async def scenario() -> tuple[AlpacaRefused, AlpacaStreamServer]:
        async with AlpacaStreamServer(rate=100) as refusing, AlpacaStreamServer(rate=100) as steady:
            refusing.plan(Faults(auth_error=402))
            with pytest.raises(AlpacaRefused) as refused:
                await asyncio.wait_for(stream(StockStream(["SPY"], keys=KEYS, url=steady.url),
                                              StockStream(["TSLA"], keys=KEYS, url=refusing.url),
                                              handlers={"trade": keep}), 10)
            await until(lambda: all(c.closed_at is not None for c in steady.connections), "the other one closed")
            return refused.value, steady

    refusal, steady = run(scenario())
    assert refusal.code == 402


def test_a_recording_that_ends_leaves_the_stream_beside_it_streaming():
    got, keep = kept_by_symbol()

    async def scenario() -> tuple[Session, int]:
        async with AlpacaStreamServer(rate=200, seed=5) as server:
            session = Session()
            sources = (Recording(str(RECORDING)), StockStream(["AAPL"], keys=KEYS, url=server.url))
            task = asyncio.create_task(stream(*sources, handlers={"trade": keep}, session=session))
            try:
                await until(lambda: len(got.get("AAPL", [])) >= 20, "the stream's trades")
                recorded = len(got["SPY"]) + len(got["TSLA"])
                streamed = len(got["AAPL"])
                await until(lambda: len(got["AAPL"]) >= streamed + 20, "more of them, the recording over")
                assert not task.done()
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            return session, recorded

    session, recorded = run(scenario())
    assert recorded == 55 and session.received["trade"] == 55 + len(got["AAPL"])


def test_a_recording_alone_ends_the_stream_and_returns_what_it_counted():
    got, keep = kept_by_symbol()
    session = run(asyncio.wait_for(stream(Recording(str(RECORDING)), handlers={"trade": keep}), 10))
    assert session.received == {**session.received, "trade": 55, "correction": 2, "cancel": 3}
    assert sum(map(len, got.values())) == 55


def test_the_stream_awaited_in_a_running_loop_installs_no_signal_handler_and_configures_no_logging():
    got, keep = kept_by_symbol()
    signals = (signal.SIGINT, signal.SIGTERM)

    def installed() -> tuple:
        return ({sig: signal.getsignal(sig) for sig in signals}, list(logging.getLogger().handlers),
                logging.getLogger("alpaca_stream").level)

    async def program() -> None:  # its own loop, already running: a notebook's, a web app's
        before = installed()  # the loop's own SIGINT handler among them (asyncio.run's)
        async with AlpacaStreamServer(rate=200) as server:
            task = asyncio.create_task(stream(StockStream(["SPY"], keys=KEYS, url=server.url),
                                              handlers={"trade": keep}))
            try:
                await until(lambda: len(got.get("SPY", [])) >= 50, "trades in the program's loop")
                assert installed() == before
            finally:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task

    run(program())
    assert len(got["SPY"]) >= 50

"""Tests of your own strategy: copy this file and test yours the same way, with no network and
no server. run_handlers() hands your handlers messages as the stream does: the same records, in
the same order; if a handler raises, the error is logged and the next message goes on, and at
the end HandlersFailed lists every error, so that the test fails.

The strategy tested here is the README's VWAP example ("Your own logic"), as you paste it over
on_trade, on_correction and on_cancel. Its lines are copied below, so that this file passes
before you paste it; once your strategy is in websocket_stream.py, delete them and import it
instead:

    from websocket_stream import on_cancel, on_correction, on_trade, turnover, volume

Then run: python -m pytest tests/test_my_bot.py
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import pytest

from websocket_stream import Trade, TradeCancel, TradeCorrection, run_handlers

# The first 60 lines of: python websocket_stream.py --demo --json > session.jsonl
RECORDING = Path(__file__).parent / "data" / "session.jsonl"

# -- the strategy: the README's VWAP examples, as pasted over on_trade, on_correction, on_cancel --

volume: dict[str, int] = {}  # per symbol: shares traded since the start
turnover: dict[str, float] = {}  # and what they were worth


async def on_trade(trade: Trade) -> None:
    symbol = trade.symbol
    volume[symbol] = volume.get(symbol, 0) + trade.size
    turnover[symbol] = turnover.get(symbol, 0.0) + trade.price * trade.size
    vwap = turnover[symbol] / volume[symbol]
    if trade.size >= 10_000:
        print(f"block: {trade.size} {symbol} at {trade.price:.2f}, "
              f"{trade.price / vwap - 1:+.3%} from the VWAP of {vwap:.2f}")


def count(symbol: str, price: float, size: int) -> None:
    """Add a trade to the VWAP's state (a negative size takes one out)."""
    volume[symbol] = volume.get(symbol, 0) + size
    turnover[symbol] = turnover.get(symbol, 0.0) + price * size


async def on_correction(correction: TradeCorrection) -> None:
    symbol = correction.symbol
    count(symbol, correction.original_price, -correction.original_size)  # out
    count(symbol, correction.corrected_price, correction.corrected_size)  # in
    if volume[symbol] > 0:
        print(f"VWAP of {symbol} corrected: "
              f"{turnover[symbol] / volume[symbol]:.2f}")


async def on_cancel(cancel: TradeCancel) -> None:
    count(cancel.symbol, cancel.price, -cancel.size)  # out: it never happened
    if volume[cancel.symbol] > 0:
        print(f"VWAP of {cancel.symbol} after a cancel: "
              f"{turnover[cancel.symbol] / volume[cancel.symbol]:.2f}")


# -- its tests ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def start_from_nothing() -> None:
    """The strategy's state lives on from one test to the next: each starts without it."""
    volume.clear()
    turnover.clear()


def trade(id: int, price: float, size: int, symbol: str = "SPY") -> dict:
    """A made-up trade, as --json prints it (a line of a recording of yours will do too)."""
    return {"type": "trade", "symbol": symbol, "price": price, "size": size,
            "timestamp": f"2026-11-24T15:00:{id:02d}+00:00", "exchange": "V", "id": id}


def test_a_block_is_reported_against_the_vwap_of_the_trades_so_far(capsys):
    run_handlers([trade(1, 100.00, 300), trade(2, 101.00, 100), trade(3, 102.00, 10_000)],
                 {"trade": on_trade})
    assert volume == {"SPY": 10_400}
    assert turnover["SPY"] == pytest.approx(300 * 100.00 + 100 * 101.00 + 10_000 * 102.00)
    printed = capsys.readouterr().out
    assert printed == "block: 10000 SPY at 102.00, +0.066% from the VWAP of 101.93\n"


def test_a_cancelled_block_is_taken_out_of_the_vwap(capsys):
    block = trade(2, 102.00, 10_000)
    cancel = {**block, "type": "cancel", "timestamp": "2026-11-24T15:00:09+00:00", "action": "C"}
    run_handlers([trade(1, 100.00, 300), block, cancel, trade(3, 100.50, 100)],
                 {"trade": on_trade, "cancel": on_cancel})
    assert volume == {"SPY": 400}  # as if the block had never been
    assert turnover["SPY"] == pytest.approx(300 * 100.00 + 100 * 100.50)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("block: 10000 SPY at 102.00")
    assert printed[1:] == ["VWAP of SPY after a cancel: 100.00"]


def test_a_corrected_trade_counts_as_it_is_now(capsys):
    wrong = trade(2, 110.00, 1_000)
    correction = {"type": "correction", "symbol": "SPY", "timestamp": "2026-11-24T15:00:09+00:00",
                  "exchange": "V", "original_id": 2, "original_price": 110.00, "original_size": 1_000,
                  "original_conditions": [" "], "corrected_id": 4, "corrected_price": 101.00,
                  "corrected_size": 500, "corrected_conditions": [" "]}
    run_handlers([trade(1, 100.00, 500), wrong, correction], {"trade": on_trade, "correction": on_correction})
    assert volume == {"SPY": 1_000}
    assert turnover["SPY"] == pytest.approx(500 * 100.00 + 500 * 101.00)
    assert capsys.readouterr().out == "VWAP of SPY corrected: 100.50\n"


def test_the_recorded_session_replayed_reports_each_block_and_counts_every_trade(capsys):
    messages = [json.loads(line) for line in RECORDING.read_text(encoding="utf-8").splitlines()]
    trades = [message for message in messages if message["type"] == "trade"]
    shares: Counter[str] = Counter()  # what the VWAP counts: trades, less cancels, as corrected
    for one in messages:
        if one["type"] == "trade":
            shares[one["symbol"]] += one["size"]
        elif one["type"] == "cancel":
            shares[one["symbol"]] -= one["size"]
        elif one["type"] == "correction":
            shares[one["symbol"]] += one["corrected_size"] - one["original_size"]
    blocks = [f"block: {one['size']} {one['symbol']}" for one in trades if one["size"] >= 10_000]
    assert blocks, "the recording has a block to report"
    session = run_handlers(messages, {"trade": on_trade, "correction": on_correction, "cancel": on_cancel})
    assert session.received["trade"] == len(trades)
    assert volume == shares
    printed = capsys.readouterr().out.splitlines()  # with what on_correction, on_cancel print
    assert [line.split(" at ")[0] for line in printed if line.startswith("block: ")] == blocks


class NotedOrders:
    """Stands in for alpaca-py's TradingClient in a test: trading_client() gives it to your
    handlers (run_handlers(..., trading=...)), and it notes the orders they place."""

    def __init__(self) -> None:
        self.placed: list[object] = []

    def submit_order(self, order: object) -> None:
        self.placed.append(order)


def test_the_handlers_in_websocket_stream_take_the_recorded_session_without_an_error(caplog):
    # Your handlers, whatever they are now: none raises on a session recorded from --demo, and
    # the orders they place are noted, not sent (the README's order example buys 1 TSLA here).
    messages = [json.loads(line) for line in RECORDING.read_text(encoding="utf-8").splitlines()]
    with caplog.at_level(logging.WARNING):
        session = run_handlers(messages, trading=NotedOrders())
    assert sum(session.received.values()) == len(messages)
    assert [record.getMessage() for record in caplog.records] == []

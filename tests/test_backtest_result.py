"""A backtest's result (docs/backtest.md): realized and unrealized P&L, equity, the largest
drawdown and buying and holding, each to the cent on a small recording of known prices; the
summary at exit, in text and under --log-format json; --fills' CSV. The handlers are the
tests' own (test_backtest.py's Bot), so these pass whatever a student writes in theirs."""

from __future__ import annotations

import csv
import json
import logging
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from test_backtest import SESSION, WHEN, Bot, Plan, at, bar, limit, market, new_york, quote, quote_at, trade

import websocket_stream as ws
from alpaca_stream.logs import JsonLogFormatter
from alpaca_stream.result import Fill, Result
from alpaca_stream.testing import run_handlers

pytestmark = pytest.mark.timeout(30)

# SPY bought (10 at 101.00), falls to 98.50, 4 sold at 102.00, ends at 100.50; TSLA's limit buy
# at 150 never fills. Equity: 100,000.00 after the buy, 99,975.00 at 98.50 (the trough: a fall
# of 25.00 from 100,000.00), 100,010.00 after the sale, 100,001.00 at the end.
LINES = [trade(0, 100.00, 100), trade(0.5, 200.00, 100, "TSLA"), trade(1, 101.00, 100), trade(2, 99.00, 100),
         trade(3, 98.50, 100), trade(4, 102.00, 100), trade(5, 100.50, 100), trade(5.5, 210.00, 100, "TSLA")]
PLAN: Plan = {1: lambda client: client.submit_order(market(10)),
              2: lambda client: client.submit_order(limit(1, 150.0, symbol="TSLA")),
              5: lambda client: client.submit_order(market(4, "sell"))}


def simulated(lines: list[dict], plan: Plan) -> Result:
    session = run_handlers(lines, Bot(plan).handlers, trading="simulated")
    assert session.backtest is not None
    return session.backtest


def test_realized_pnl_is_what_a_sale_made_over_the_average_entry_and_unrealized_the_rest_at_the_last_price():
    result = simulated(LINES, PLAN)
    spy = result.symbols["SPY"]
    assert (spy.orders, spy.fills, spy.position) == (2, 2, 6)
    assert spy.realized == 4.00  # (102.00 - 101.00) x 4
    assert spy.unrealized == -3.00  # (100.50 - 101.00) x 6
    assert result.symbols["TSLA"].realized == result.symbols["TSLA"].unrealized == 0
    assert (result.orders, len(result.fills), result.open_orders) == (3, 2, 1)


def test_equity_is_cash_and_positions_at_their_last_prices_and_the_drawdown_its_largest_fall_between_fills():
    result = simulated(LINES, PLAN)
    assert result.equity == 100_001.00  # 99,398.00 in cash, 6 SPY at 100.50
    assert (result.drawdown, result.drawdown_pct) == (25.00, 0.025)  # 100,000.00 to 99,975.00, at no fill


def test_the_drawdown_goes_by_the_price_the_account_knows_a_quotes_midpoint_not_a_trade_or_a_bar_after_it():
    # 10 bought at the ask of 100.10: equity 99,999.00 at the midpoint of 100.00; a trade at 50.00
    # and a bar's close of 40.00 are not the price of a symbol quoted; the midpoint of 99.90 is.
    lines = [quote(0, 99.9, 100, 100.1, 100), quote(1, 99.9, 100, 100.1, 100), trade(2, 50.0, 100),
             bar(0, 40.0, 40.0, 40.0, 40.0), quote(3, 99.8, 100, 100.0, 100)]
    result = simulated(lines, {1: lambda client: client.submit_order(market(10))})
    assert result.drawdown == 2.00  # from the 100,000.00 before the fill to 99,998.00


def test_buying_and_holding_splits_the_cash_across_the_symbols_ordered_at_their_first_prices():
    result = simulated(LINES, {4: lambda client: client.submit_order(market(10)),  # prices from before the
                               5: lambda client: client.submit_order(limit(1, 150.0, symbol="TSLA"))})  # orders
    # 50,000 in SPY at 100.00, marked at 100.50; 50,000 in TSLA at 200.00, marked at 210.00.
    assert result.buy_and_hold_equity == 50_250.00 + 52_500.00


def test_a_round_trip_realizes_its_pnl_to_the_cent_and_leaves_nothing_unrealized():
    lines = [trade(0, 10.00, 100), trade(1, 10.10, 100), trade(2, 10.30, 100), trade(3, 10.25, 100)]
    result = simulated(lines, {1: lambda client: client.submit_order(market(7)),
                               3: lambda client: client.submit_order(market(7, "sell"))})
    spy = result.symbols["SPY"]
    assert (spy.realized, spy.unrealized, spy.position) == (1.05, 0, 0)  # (10.25 - 10.10) x 7
    assert result.equity == 100_001.05
    assert result.drawdown == 0.35  # from 100,001.40 at 10.30 to the sale at 10.25
    assert [(fill.side, fill.qty, fill.price, fill.position_after, fill.cash_after) for fill in result.fills] == [
        ("buy", 7, 10.10, 7, pytest.approx(100_000 - 70.70)), ("sell", 7, 10.25, 0, pytest.approx(100_001.05))]



def test_an_options_result_counts_the_100_shares_of_a_contract():
    call = "AAPL261218C00250000"
    lines = [trade(0, 2.50, 10, call), trade(1, 2.50, 10, call), trade(2, 3.00, 10, call), trade(3, 2.80, 10, call)]
    session = run_handlers(lines, Bot({1: lambda client: client.submit_order(market(2, symbol=call)),
                                       2: lambda client: client.submit_order(market(1, "sell", symbol=call))}).handlers,
                           trading="simulated")
    result = session.backtest
    assert result is not None
    part = result.symbols[call]
    assert part.realized == 50.00  # (3.00 - 2.50) x 100 shares of 1 contract
    assert part.unrealized == 30.00  # (2.80 - 2.50) x 100 of the other
    assert result.equity == 100_080.00


def run(tmp_path: Path, *options: str, lines: list[dict] = LINES, plan: Plan = PLAN) -> int:
    recording = tmp_path / "recording.jsonl"
    recording.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return ws.main(["--replay", str(recording), "--quiet", *options], handlers=Bot(plan).handlers)


def test_the_summary_ends_with_the_result_within_80_columns(tmp_path, caplog):
    assert run(tmp_path) == 0
    summary = next(record for record in caplog.records if record.getMessage().startswith("received"))
    assert summary.getMessage().splitlines()[-5:] == [
        "backtest: orders 3, fills 2, open at the end 1",
        "SPY: realized +4.00, unrealized -3.00, holding 6",
        "TSLA: realized +0.00, unrealized +0.00",
        "equity 100,001.00 (+1.00); largest drawdown 25.00 (0.03%)",
        "buy and hold SPY, TSLA: equity 102,750.00 (+2,750.00)"]
    assert max(map(len, summary.getMessage().splitlines())) <= 58  # 80 with the log's time


def test_the_json_summary_carries_the_result(tmp_path, caplog):
    assert run(tmp_path, "--log-format", "json") == 0
    summary = next(record for record in caplog.records if record.getMessage().startswith("received"))
    line = json.loads(JsonLogFormatter().format(summary))
    assert line["message"].startswith("received ") and "\n" not in line["message"]  # a terminal's breaks
    assert line["backtest"] == {
        "orders": 3, "fills": 2, "open_orders": 1,
        "symbols": {"SPY": {"realized": 4.0, "unrealized": -3.0, "position": 6},
                    "TSLA": {"realized": 0.0, "unrealized": 0.0, "position": 0}},
        "equity": 100_001.0, "drawdown": 25.0, "drawdown_pct": 0.025, "buy_and_hold_equity": 102_750.0, "fees": 0.0,
        "fee_bps": 0.0, "slippage_bps": 0.0, "waiting_for_open": []}  # TSLA's limit: in regular hours


# A recording of --demo made in the evening (19:25 New York, a Monday) or on a weekend: the demo's
# broker filled its market orders at any hour, the backtest's wait for the open, as Alpaca's do.
EVENING = [quote_at(new_york(19, 25, day=7), 599.9, 600.1), quote_at(new_york(19, 26, day=7), 599.9, 600.1),
           quote_at(new_york(19, 27, day=7), 599.9, 600.1)]
TWO_MARKET_BUYS: Plan = {1: lambda client: client.submit_order(market(1)),
                         2: lambda client: client.submit_order(market(2))}


def test_the_summary_says_which_orders_wait_for_the_open_and_why_when_a_recording_ends_after_the_close(
        tmp_path, caplog):
    assert run(tmp_path, lines=EVENING, plan=TWO_MARKET_BUYS) == 0
    summary = next(record for record in caplog.records if record.getMessage().startswith("received"))
    said = summary.getMessage().splitlines()
    assert said[-7:-3] == [
        "backtest: orders 2, fills 0, open at the end 2",
        "2 market orders waiting for the open (09:30 New York,",
        "  2026-12-08): the recording ends at 19:27 New York,",
        "  outside regular hours; docs/backtest.md"]
    assert max(map(len, said)) <= 58  # 80 with the log's time


def test_the_json_summary_says_the_orders_waiting_for_the_open_by_the_hours_they_wait_for(tmp_path, caplog):
    saturday = [{**quote, "timestamp": (datetime.fromisoformat(quote["timestamp"]) + timedelta(days=5)).isoformat()}
                for quote in EVENING]  # 2026-12-12
    plan: Plan = {**TWO_MARKET_BUYS, 3: lambda client: client.submit_order(limit(1, 599.0, extended_hours=True))}
    assert run(tmp_path, "--log-format", "json", lines=saturday, plan=plan) == 0
    summary = next(record for record in caplog.records if record.getMessage().startswith("received"))
    assert json.loads(JsonLogFormatter().format(summary))["backtest"]["waiting_for_open"] == [
        {"orders": 2, "type": "market", "opens": "2026-12-14T09:30:00-05:00",
         "why": "the recording ends on a Saturday, outside regular hours"},
        {"orders": 1, "type": "limit", "opens": "2026-12-14T04:00:00-05:00",
         "why": "the recording ends on a Saturday, outside extended hours"}]


def test_fills_writes_each_fill_as_csv_with_the_recordings_times(tmp_path):
    assert run(tmp_path, "--fills", str(tmp_path / "fills.csv")) == 0
    with open(tmp_path / "fills.csv", newline="", encoding="utf-8") as file:
        rows = list(csv.reader(file))
    assert rows[0] == list(Fill._fields) == ["time", "symbol", "side", "qty", "price", "order_id", "event",
                                             "position_after", "cash_after"]
    assert [row[:5] + row[6:] for row in rows[1:]] == [
        [at(1), "SPY", "buy", "10", "101", "fill", "10", "98990"],
        [at(4), "SPY", "sell", "4", "102", "fill", "6", "99398"]]
    assert all(len(row[5]) == 36 for row in rows[1:])  # the order's id, a UUID


def test_fills_of_a_replay_with_no_order_is_a_header_alone(tmp_path):
    assert run(tmp_path, "--fills", str(tmp_path / "fills.csv"), plan={}) == 0
    assert (tmp_path / "fills.csv").read_bytes() == ",".join(Fill._fields).encode() + b"\r\n"  # as csv writes it


@pytest.mark.parametrize(("where", "said"), [
    ("missing/fills.csv", "--fills: cannot write {path}:\nNo such file or directory"),
    ("recording.jsonl", "--fills {path} is the recording: it would be overwritten")])
def test_fills_that_cannot_be_written_exits_2_with_why_before_the_replay_starts(tmp_path, caplog, where, said):
    path = str(tmp_path / where)
    assert run(tmp_path, "--fills", path) == 2
    assert said.format(path=path) in caplog.text
    assert "replaying" not in caplog.text
    assert json.loads((tmp_path / "recording.jsonl").read_text(encoding="utf-8").splitlines()[0])["price"] == 100


def test_two_runs_give_the_same_result():
    first, again = simulated(LINES, PLAN), simulated(LINES, PLAN)
    assert first.fields() == again.fields()
    assert [fill._replace(order_id="") for fill in first.fills] == [fill._replace(order_id="") for fill in again.fills]
    assert [fill.time for fill in first.fills] == [WHEN.replace(second=1), WHEN.replace(second=4)]


def test_a_replay_with_no_order_says_no_result(caplog):
    with caplog.at_level(logging.INFO):
        assert ws.main(["--replay", str(SESSION), "--quiet"], handlers={}) == 0
    assert "backtest:" not in caplog.text

"""--report's page in a real browser (#34), offline: headless Chromium (Debian's chromium package)
driven by Playwright for Python, as test_chart_browser.py's; the candles, the fills' markers and
the equity read back from the page's series, as drawn. Skipped, saying why, where Chromium or
Playwright is missing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from test_backtest import backtest, filled
from test_chart import candles_of
from test_chart_browser import CHROMIUM, playwright, utc  # skips here too without them
from test_report import PLAN, TRADES, summarized

pytestmark = pytest.mark.timeout(60)

DRAWN = """() => Object.fromEntries(Object.entries(window.charts).map(([symbol, shown]) => [symbol, {
    candles: shown.candles.data(), volume: shown.volume.data(), markers: shown.markers.markers()}]))"""


@contextmanager
def opened_offline(path: Path) -> Iterator[Any]:
    """The file in a browser with the network off, once its charts are drawn (Playwright's
    runs an event loop of its own: not while the script runs in this process)."""
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_context(offline=True).new_page()
        errors: list[Any] = []
        asked: list[str] = []
        page.on("pageerror", lambda error: errors.append(error))
        page.on("request", lambda request: asked.append(request.url))
        page.goto(path.as_uri())
        page.wait_for_function("() => window.drawn", timeout=10_000)
        assert errors == [] and asked == [path.as_uri()]  # the file alone: nothing beside it
        yield page
        browser.close()


def test_the_report_opens_offline_with_the_trades_candles_the_fills_at_their_prices_and_times_and_the_equity(
        tmp_path, caplog):
    path = tmp_path / "report.html"
    bot = backtest(tmp_path, TRADES, PLAN, options=("--report", str(path)))
    with opened_offline(path) as offline:
        drawn = offline.evaluate(DRAWN)
        equity = offline.evaluate("() => window.equity.data().map((point) => point.value)")
        # The equity axis's labels, as the table's figures: with thousands separators.
        label = offline.evaluate("() => window.equity.priceFormatter().format(100033.84)")
        attributions = offline.locator("#tv-attr-logo").count()
    assert {symbol: {utc(candle["time"]): [candle["open"], candle["high"], candle["low"], candle["close"], bar["value"]]
                     for candle, bar in zip(mine["candles"], mine["volume"])} for symbol, mine in drawn.items()} == {
        symbol: {minute: pytest.approx(values) for minute, values in candles.items()}
        for symbol, candles in candles_of(TRADES).items()}
    fills = [(int(when.timestamp()) // 60 * 60, price, "atPriceBottom" if number == 0 else "atPriceTop")
             for number, (_, price, _, when) in enumerate(filled(bot))]
    assert len(fills) == 2
    assert [(utc(marker["time"]), marker["price"], marker["position"]) for marker in drawn["SPY"]["markers"]] == fills
    assert drawn["TSLA"]["markers"] == []
    assert equity[-1] == float(summarized(caplog.text)["equity"].replace(",", ""))
    assert label == "100,033.84"
    assert attributions == 3  # TradingView's attribution, on each chart


# New York's midnight in winter and in summer, 14:00 UTC in winter, and the hour the clocks repeat.
WALLS = [("2026-12-02T05:00Z", "2026-12-02T00:00Z"), ("2026-06-01T04:00Z", "2026-06-01T00:00Z"),
         ("2026-12-02T14:00Z", "2026-12-02T09:00Z"), ("2026-11-01T05:30Z", "2026-11-01T01:30Z"),
         ("2026-11-01T06:30Z", "2026-11-01T01:30Z")]


def test_the_charts_days_start_at_new_yorks_midnight_in_winter_and_summer_their_times_new_yorks_wall_clock(
        tmp_path, caplog):
    path = tmp_path / "report.html"
    backtest(tmp_path, TRADES, PLAN, options=("--report", str(path)))
    with opened_offline(path) as offline:
        walls = offline.evaluate("(times) => times.map((time) => newYork.wall(Date.parse(time) / 1000))",
                                 [moment for moment, _ in WALLS])
        # The chart's labels, as the library gives them: New York's time, the day at its midnight.
        labels = offline.evaluate("() => [newYork.tick(Date.parse('2026-12-02T00:00Z') / 1000, 1), "
                                  "newYork.tick(Date.parse('2026-12-02T09:30Z') / 1000, 3)]")
        first = offline.evaluate("() => window.charts.SPY.candles.data()[0].time")
    assert walls == [int(datetime.fromisoformat(wall.replace("Z", "+00:00")).timestamp()) for _, wall in WALLS]
    assert labels == ["Dec 2", "09:30"]
    assert first == int(datetime.fromisoformat("2026-12-02T10:00+00:00").timestamp())  # WHEN, 10:00 in New York

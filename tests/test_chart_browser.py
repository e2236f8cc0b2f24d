"""--chart's page in a real browser (#34): headless Chromium (Debian's chromium package, which
.ci/run installs), driven by Playwright for Python; the candles and the fills' markers read
back from the page's series, as drawn. Skipped, saying why, where Chromium or Playwright is
missing."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from test_chart import OVER, SESSION, candles_of, order_example, page_of, stopped_when_over

from alpaca_stream.calendar import NEW_YORK

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
if not shutil.which(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium; CHROMIUM=path for another)",
                allow_module_level=True)
playwright = pytest.importorskip("playwright.sync_api", reason="no Playwright: pip install -r requirements-dev.txt")

pytestmark = pytest.mark.timeout(60)

SHOWN = """() => Object.fromEntries(Object.entries(window.charts).map(([symbol, shown]) => [symbol, {
    candles: shown.candles.data(), volume: shown.volume.data(), markers: shown.markers.markers(),
    side: shown.side.innerText}]))"""


@pytest.fixture
def browser() -> Iterator[Any]:
    with playwright.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def utc(wall: int) -> int:
    """The UTC time of a series' time: the pages give the library New York's wall clock written
    as UTC, so that its days start at New York's midnight."""
    return int(datetime.fromtimestamp(wall, timezone.utc).replace(tzinfo=NEW_YORK).timestamp())


def shown(page: Any) -> dict[str, dict]:
    """Each symbol's candles as the page's series have them: minute (UTC) -> open, high, low,
    close, volume; its markers (their times UTC), and the text beside its chart."""
    drawn = page.evaluate(SHOWN)
    return {symbol: {"candles": {utc(candle["time"]): [candle["open"], candle["high"], candle["low"], candle["close"],
                                                  volume["value"]]
                                 for candle, volume in zip(mine["candles"], mine["volume"])},
                     "markers": [{**marker, "time": utc(marker["time"])} for marker in mine["markers"]],
                     "side": mine["side"]} for symbol, mine in drawn.items()}


def volume(page: Any) -> float:
    return float(page.evaluate(f"() => {VOLUME}"))


# Pixels from each chart's last candle to the right end of its time scale, for the label under it
ROOM = """() => Object.fromEntries(Object.entries(window.charts).filter(([, shown]) => shown.candles.data().length)
    .map(([symbol, shown]) => [symbol, shown.chart.timeScale().width()
                               - shown.chart.timeScale().timeToCoordinate(shown.candles.data().at(-1).time)]))"""

VOLUME = ("Object.values(window.charts).reduce((sum, shown) => "
          "sum + shown.volume.data().reduce((all, bar) => all + bar.value, 0), 0)")  # every symbol's, drawn


def test_a_demo_runs_page_draws_the_minutes_with_trades_grows_and_a_page_opened_late_has_them(start_script,
                                                                                                browser):
    script = start_script("--demo", "--chart", bot=True)
    address = f"http://{page_of(script)}/"
    first = browser.new_page()
    first.goto(address)
    first.wait_for_function(f"() => {VOLUME} > 0", timeout=15_000)
    before = volume(first)
    first.wait_for_function(f"() => {VOLUME} > {before}", timeout=15_000)  # it grows
    grown = volume(first)
    late = browser.new_page()
    late.goto(address)
    late.wait_for_function(f"() => {VOLUME} >= {grown}", timeout=15_000)  # what came before it
    script.process.send_signal(signal.SIGINT)
    assert script.finish() == 0
    first.wait_for_selector("#status.lost", timeout=10_000)  # the script gone: said on the page
    trades = [line for line in map(json.loads, script.out_lines) if line["kind"] == "trade"]
    made = candles_of(trades)
    for page in (first, late):
        assert {symbol: mine["candles"] for symbol, mine in shown(page).items() if mine["candles"]} == {
            symbol: {minute: pytest.approx(values) for minute, values in candles.items()}
            for symbol, candles in made.items()}
    assert min(first.evaluate(ROOM).values()) >= 20  # the last minute's label whole, not cut by the price scale
    charts = first.evaluate("Object.keys(window.charts).length")
    assert first.locator("#tv-attr-logo").count() == charts  # TradingView's attribution, on each chart


def test_a_backtests_fill_is_marked_below_the_price_at_its_minute_and_its_position_beside_it(start_script,
                                                                                              browser):
    script = start_script("--replay", str(SESSION), "--replay-speed", "2", "--chart", edit=order_example)
    page = browser.new_page()
    page.goto(f"http://{page_of(script)}/")
    stopped_when_over(script)
    assert script.finish() == 0, script.stderr
    page.wait_for_selector("#status.lost", timeout=10_000)
    tsla = shown(page)["TSLA"]
    filled = next(line for line in map(json.loads, SESSION.read_text().splitlines())
                  if line["type"] == "trade" and line["symbol"] == "TSLA" and line["price"] == 350.28)
    minute = int(datetime.fromisoformat(filled["timestamp"]).timestamp()) // 60 * 60
    assert [(marker["time"], marker["price"], marker["position"]) for marker in tsla["markers"]] == [
        (minute, 350.28, "atPriceBottom")]
    assert "position 1" in tsla["side"] and "realized P&L +0.00" in tsla["side"]


def test_a_replays_page_says_the_run_is_over_once_it_is_and_a_page_opened_later_too(start_script, browser):
    script = start_script("--replay", str(SESSION), "--replay-speed", "2", "--chart", "--quiet")
    address = f"http://{page_of(script)}/"
    first = browser.new_page()
    first.goto(address)
    first.wait_for_selector("#status:text('live')", timeout=15_000)  # as it plays
    script.wait_for_stderr(OVER)
    late = browser.new_page()
    late.goto(address)
    for page in (first, late):  # told at the end; told as it opens
        page.wait_for_selector("#status:text('the run is over: the chart stays until the script stops')",
                               timeout=15_000)
    script.process.send_signal(signal.SIGINT)
    assert script.finish() == 0, script.stderr

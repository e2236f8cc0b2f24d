// What the live page (index.html) and a backtest's report (report.html) draw alike, with
// TradingView's Lightweight Charts: a chart with its attribution, times in New York's; candles
// with their volume below them; a fill's marker.
"use strict";
const newYork = (() => {
  const zone = {timeZone: "America/New_York"};
  const hours = new Intl.DateTimeFormat("en-US", {...zone, hour: "2-digit", minute: "2-digit", hourCycle: "h23"});
  const days = new Intl.DateTimeFormat("en-US", {...zone, month: "short", day: "numeric"});
  const moments = new Intl.DateTimeFormat("en-US", {...zone, year: "numeric", month: "short", day: "numeric",
                                                    hour: "2-digit", minute: "2-digit", hourCycle: "h23"});
  const dated = (seconds) => new Date(seconds * 1000);
  return {moment: (time) => moments.format(dated(time)),
          tick: (time, type) => (type < LightweightCharts.TickMarkType.Time ? days : hours).format(dated(time))};
})();

function newChart(box) {
  return LightweightCharts.createChart(box, {
    autoSize: true,
    layout: {attributionLogo: true},
    localization: {timeFormatter: newYork.moment},
    // rightOffset: room for the last minute's label, which the price scale cut at the start
    timeScale: {timeVisible: true, secondsVisible: false, rightOffset: 5, tickMarkFormatter: newYork.tick},
  });
}

function candleChart(box) {
  const chart = newChart(box);
  const candles = chart.addSeries(LightweightCharts.CandlestickSeries, {});
  candles.priceScale().applyOptions({scaleMargins: {top: 0.1, bottom: 0.25}});
  const volume = chart.addSeries(LightweightCharts.HistogramSeries, {priceFormat: {type: "volume"}, priceScaleId: "",
                                                                    color: "#9db"});
  volume.priceScale().applyOptions({scaleMargins: {top: 0.8, bottom: 0}});
  return {chart, candles, volume};
}

function fillMarker(time, side, qty, price) {  // at the fill's price: under it for a buy, over it for a sell
  const buy = side === "buy";
  return {time, price, position: buy ? "atPriceBottom" : "atPriceTop", shape: buy ? "arrowUp" : "arrowDown",
          color: buy ? "#26a69a" : "#ef5350", text: `${buy ? "B" : "S"} ${qty}`};
}

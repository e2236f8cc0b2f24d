// What the live page (index.html) and a backtest's report (report.html) draw alike, with
// TradingView's Lightweight Charts: a chart with its attribution, times in New York's; candles
// with their volume below them; a fill's marker.
"use strict";
// The library places a day's mark where a day starts in UTC: each time is given to it as New
// York's wall clock then, written as UTC (newYork.wall, Lightweight Charts' documented way for
// a time zone), and labelled as UTC. The hour the clocks repeat in November is drawn once.
const newYork = (() => {
  const parts = new Intl.DateTimeFormat("en-US", {timeZone: "America/New_York", hourCycle: "h23", year: "numeric",
                                                  month: "numeric", day: "numeric", hour: "numeric", minute: "numeric"});
  const offsets = new Map();  // an hour since 1970 -> New York's offset from UTC then, in seconds
  const zone = {timeZone: "UTC"};
  const hours = new Intl.DateTimeFormat("en-US", {...zone, hour: "2-digit", minute: "2-digit", hourCycle: "h23"});
  const days = new Intl.DateTimeFormat("en-US", {...zone, month: "short", day: "numeric"});
  const moments = new Intl.DateTimeFormat("en-US", {...zone, year: "numeric", month: "short", day: "numeric",
                                                    hour: "2-digit", minute: "2-digit", hourCycle: "h23"});
  const dated = (seconds) => new Date(seconds * 1000);
  function wall(seconds) {  // UTC seconds -> New York's wall clock as UTC seconds; its offset moves on the hour
    const hour = Math.floor(seconds / 3600);
    if (!offsets.has(hour)) {
      const at = Object.fromEntries(parts.formatToParts(dated(hour * 3600)).map(({type, value}) => [type, +value]));
      offsets.set(hour, Date.UTC(at.year, at.month - 1, at.day, at.hour, at.minute) / 1000 - hour * 3600);
    }
    return seconds + offsets.get(hour);
  }
  return {wall, moment: (time) => moments.format(dated(time)),
          tick: (time, type) => (type < LightweightCharts.TickMarkType.Time ? days : hours).format(dated(time))};
})();

function ascending(points) {  // points in order of time, shifted: those whose time is not past the last's dropped
  return points.filter((point, at) => at === 0 || point.time > points[at - 1].time);
}

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
  return {time: newYork.wall(time), price, position: buy ? "atPriceBottom" : "atPriceTop", shape: buy ? "arrowUp" : "arrowDown",
          color: buy ? "#26a69a" : "#ef5350", text: `${buy ? "B" : "S"} ${qty}`};
}

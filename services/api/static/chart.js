// Ratchet dashboard charts, drawn by TradingView Lightweight Charts (vendored, see vendor/):
// the price chart of one symbol (candles, EMA 9/21/50/200, entry and exit marks, a line for each
// open leg's stop, target and entry) and the equity curve.
"use strict";

// The axis shows India time: Lightweight Charts draws UTC, so times are shifted by IST's offset.
const IST_OFFSET_S = 19800;
const EMAS = [["ema_9", 9], ["ema_21", 21], ["ema_50", 50], ["ema_200", 200]];

function chartTime(ms) { return Math.floor(ms / 1000) + IST_OFFSET_S; }

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function baseOptions() {
  return {
    autoSize: true,
    layout: { background: { type: "solid", color: cssVar("--bg") }, textColor: cssVar("--fg"),
              fontFamily: getComputedStyle(document.body).fontFamily },
    grid: { vertLines: { color: cssVar("--grid") }, horzLines: { color: cssVar("--grid") } },
    rightPriceScale: { borderColor: cssVar("--line") },
    timeScale: { borderColor: cssVar("--line"), timeVisible: true, secondsVisible: false },
    crosshair: { mode: LightweightCharts.CrosshairMode.Normal },
  };
}

class PriceChart {
  constructor(element, legend) {
    const LC = LightweightCharts;
    this.legend = legend;
    this.chart = LC.createChart(element, baseOptions());
    this.candles = this.chart.addSeries(LC.CandlestickSeries, {});
    this.emas = EMAS.map(([, n], i) => this.chart.addSeries(LC.LineSeries, {
      lineWidth: n === 9 ? 2 : 1, priceLineVisible: false, lastValueVisible: false,
      crosshairMarkerVisible: false, title: `EMA ${n}`, color: cssVar(`--ema${i}`),
    }));
    this.markers = LC.createSeriesMarkers(this.candles, []);
    this.lines = new Map(); // "trade_id|kind" -> price line
    this.symbol = null;
    this.frameS = 900;
    this.lastTime = null; // time of the newest bar drawn (closed or forming)
    this.closedTime = null; // time of the newest closed bar
    this.forming = null;
    this.applyTheme();
  }

  applyTheme() {
    this.chart.applyOptions(baseOptions());
    this.candles.applyOptions({
      upColor: cssVar("--up"), downColor: cssVar("--down"), borderVisible: false,
      wickUpColor: cssVar("--up"), wickDownColor: cssVar("--down"),
    });
    this.emas.forEach((s, i) => s.applyOptions({ color: cssVar(`--ema${i}`) }));
    for (const [key, line] of this.lines) line.applyOptions({ color: this.lineColor(key.split("|")[1]) });
  }

  lineColor(kind) {
    return { stop: cssVar("--down"), target: cssVar("--up"), entry: cssVar("--muted") }[kind];
  }

  // bars: GET /api/v1/candles/{symbol} (rupees, ISO times), oldest first.
  load(symbol, bars, timeframeMinutes) {
    this.symbol = symbol;
    this.frameS = timeframeMinutes * 60;
    this.forming = null;
    const data = bars.map((b) => ({ time: chartTime(Date.parse(b.ts)), open: b.open, high: b.high,
                                    low: b.low, close: b.close }));
    this.candles.setData(data);
    this.emas.forEach((series, i) => series.setData(bars
      .filter((b) => b[EMAS[i][0]] !== null)
      .map((b) => ({ time: chartTime(Date.parse(b.ts)), value: b[EMAS[i][0]] }))));
    this.lastTime = this.closedTime = data.length ? data[data.length - 1].time : null;
    this.setLegs([]);
    this.chart.timeScale().scrollToRealTime();
  }

  // A closed bar from the candles channel. The feed closes a bar on the first tick past its end,
  // so the next bar may already be forming here: the closed one then replaces its tick-built
  // twin as a historical update.
  onCandle(c) {
    if (c.symbol !== this.symbol) return;
    const time = chartTime(c.start_ms);
    if (this.closedTime !== null && time < this.closedTime) return;
    const historical = this.lastTime !== null && time < this.lastTime;
    try {
      this.candles.update({ time, open: c.open, high: c.high, low: c.low, close: c.close }, historical);
    } catch (_) {
      return; // a bar the chart never drew (no tick of it seen): the next reload has it
    }
    this.emas.forEach((series, i) => {
      const value = c[EMAS[i][0]];
      if (value !== null && value !== undefined) series.update({ time, value });
    });
    this.closedTime = time;
    if (!historical) this.lastTime = time;
    if (this.forming && this.forming.time <= time) this.forming = null;
  }

  // A tick of this symbol: grows the bar that is forming.
  onTick(t) {
    if (t.symbol !== this.symbol) return;
    const ms = this.frameS * 1000;
    const time = chartTime(Math.floor(t.ts_ms / ms) * ms);
    if (this.closedTime !== null && time <= this.closedTime) return;
    if (this.lastTime !== null && time < this.lastTime) return;
    const f = this.forming;
    if (f && f.time === time) {
      f.high = Math.max(f.high, t.price); f.low = Math.min(f.low, t.price); f.close = t.price;
    } else {
      this.forming = { time, open: t.price, high: t.price, low: t.price, close: t.price };
    }
    this.candles.update({ ...this.forming });
    this.lastTime = time;
  }

  barTime(ms) { return chartTime(Math.floor(ms / (this.frameS * 1000)) * this.frameS * 1000); }

  // legs: every leg of this symbol (open and closed), shaped like the legs channel's Leg.
  setLegs(legs) {
    const marks = [];
    const wanted = new Map();
    for (const leg of legs) {
      if (leg.entry_time_ms) {
        marks.push({ time: this.barTime(leg.entry_time_ms), position: "belowBar", shape: "arrowUp",
                     color: cssVar("--accent"), text: `P${leg.leg} buy ${leg.entry_price}` });
      }
      if (leg.status === "CLOSED" && leg.exit_time_ms) {
        marks.push({ time: this.barTime(leg.exit_time_ms), position: "aboveBar", shape: "arrowDown",
                     color: cssVar("--down"),
                     text: `P${leg.leg} ${leg.exit_reason || "exit"} ${leg.exit_price ?? ""}` });
      }
      if (leg.status === "OPEN") {
        if (leg.stop !== null) wanted.set(`${leg.trade_id}|stop`, [leg, leg.stop]);
        if (leg.target !== null) wanted.set(`${leg.trade_id}|target`, [leg, leg.target]);
        if (leg.entry_price !== null) wanted.set(`${leg.trade_id}|entry`, [leg, leg.entry_price]);
      }
    }
    marks.sort((a, b) => a.time - b.time);
    this.markers.setMarkers(marks);
    for (const [key, line] of this.lines) {
      if (!wanted.has(key)) { this.candles.removePriceLine(line); this.lines.delete(key); }
    }
    for (const [key, [leg, price]] of wanted) {
      const kind = key.split("|")[1];
      const line = this.lines.get(key);
      if (line) {
        if (line.options().price !== price) line.applyOptions({ price }); // a stop that ratcheted
      } else {
        const LS = LightweightCharts.LineStyle;
        this.lines.set(key, this.candles.createPriceLine({
          price, color: this.lineColor(kind), lineWidth: kind === "stop" ? 2 : 1,
          lineStyle: kind === "entry" ? LS.Dotted : LS.Dashed, axisLabelVisible: true,
          title: `P${leg.leg} ${kind}`,
        }));
      }
    }
    this.renderLegend();
  }

  // What the chart's price lines say now (read back from the chart): for people and for tests.
  priceLines() {
    return [...this.lines].map(([key, line]) => {
      const [tradeId, kind] = key.split("|");
      return { trade_id: tradeId, kind, price: line.options().price, title: line.options().title };
    }).sort((a, b) => a.title.localeCompare(b.title));
  }

  renderLegend() {
    const items = this.priceLines().map((l) => {
      const li = document.createElement("li");
      li.dataset.kind = l.kind;
      li.dataset.trade = l.trade_id;
      li.className = l.kind;
      li.textContent = `${l.title} ${l.price.toFixed(2)}`;
      return li;
    });
    this.legend.replaceChildren(...items);
  }
}

class EquityChart {
  constructor(element) {
    this.chart = LightweightCharts.createChart(element, baseOptions());
    this.series = this.chart.addSeries(LightweightCharts.BaselineSeries, { baseValue: { type: "price", price: 0 } });
    this.lastTime = null;
    this.applyTheme();
  }

  applyTheme() {
    this.chart.applyOptions(baseOptions());
    this.series.applyOptions({
      topLineColor: cssVar("--up"), bottomLineColor: cssVar("--down"),
      topFillColor1: cssVar("--up-fill"), topFillColor2: "transparent",
      bottomFillColor1: "transparent", bottomFillColor2: cssVar("--down-fill"),
    });
  }

  // equity: GET /api/v1/pnl/equity; nowMs: the feed's latest time, where the total is drawn.
  load(equity, nowMs) {
    const byTime = new Map();
    for (const p of equity.points) byTime.set(chartTime(Date.parse(p.ts)), p.realised);
    const data = [...byTime].map(([time, value]) => ({ time, value })).sort((a, b) => a.time - b.time);
    this.lastTime = data.length ? data[data.length - 1].time : null;
    this.series.setData(data);
    this.updateTotal(equity.total, nowMs);
    this.chart.timeScale().fitContent();
  }

  updateTotal(total, nowMs) {
    if (!nowMs) return;
    const time = chartTime(nowMs);
    if (this.lastTime !== null && time < this.lastTime) return;
    this.series.update({ time, value: total });
    this.lastTime = time;
  }
}

window.RatchetCharts = { PriceChart, EquityChart };

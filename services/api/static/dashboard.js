// Ratchet dashboard: sign in (a user's session cookie, or an API key kept in this tab), then
// ladders, PnL, a chart, the equity curve and the order/GTT/alert log, all kept live by two
// WebSocket feeds (one for the account's events, one for the charted symbol's market data).
// Talks only to this origin; builds the DOM without innerHTML.
"use strict";

const KEY_STORE = "ratchet.apiKey";
const THEME_STORE = "ratchet.theme";
const LOG_MAX = 200;
const $ = (id) => document.getElementById(id);

const money = new Intl.NumberFormat("en-IN", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const fmt = (v) => (v === null || v === undefined ? "–" : money.format(v));
const pct = (v) => (v === null || v === undefined ? "–" : `${v.toFixed(2)}%`);
const inr = (v) => (v === null || v === undefined ? "–" : `${v < 0 ? "−" : ""}₹${fmt(Math.abs(v))}`);
const sign = (v) => (v > 0 ? "up" : v < 0 ? "down" : "");
// One formatter, made once: toLocaleTimeString with options builds a new one per call, and the
// log redrawing its 200 lines per event made that most of the page's CPU.
const timeOfDay = new Intl.DateTimeFormat("en-IN", {
  timeZone: "Asia/Kolkata", hour12: false, hour: "2-digit", minute: "2-digit", second: "2-digit" });
const clock = (ms) => timeOfDay.format(ms);

// Events can come many a frame (a fast feed sends dozens a second): each drawing waits for the
// next frame, and one drawing serves every event before it.
const pendingDraws = new Set();
function drawNextFrame(draw) {
  if (pendingDraws.has(draw)) return;
  pendingDraws.add(draw);
  requestAnimationFrame(() => { pendingDraws.delete(draw); draw(); });
}

const state = {
  auth: null, // { mode: "cookie"|"key", key, csrf, name, role }
  legs: new Map(), // trade_id -> leg (open legs)
  symbolLegs: [], // every leg of the charted symbol
  chartSymbol: null,
  latestMs: null, // the feed's newest time (event time)
  pnl: null,
  log: [],
  logKinds: new Set(["order", "gtt", "alert"]),
};
let priceChart = null;
let equityChart = null;
let events = null; // LiveFeed: orders, gtts, legs, alerts, pnl, status
let market = null; // LiveFeed: ticks and candles of the charted symbol

// --- http ---------------------------------------------------------------------------------------

class Unauthorised extends Error {}

async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  const auth = state.auth;
  if (auth && auth.mode === "key") headers["X-API-Key"] = auth.key;
  if (method !== "GET") {
    headers["Content-Type"] = "application/json";
    headers["Idempotency-Key"] = crypto.randomUUID();
    if (auth && auth.csrf) headers["X-CSRF-Token"] = auth.csrf;
  }
  const res = await fetch(`/api/v1/${path}`, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  if (res.status === 401) throw new Unauthorised("unauthorised");
  if (!res.ok) {
    let detail = res.statusText;
    try { detail = (await res.json()).detail || detail; } catch (_) { /* not JSON */ }
    throw new Error(`${res.status} ${detail}`);
  }
  return res.status === 204 ? null : res.json();
}

function say(text) { $("status").textContent = text; }

function failed(err) {
  if (err instanceof Unauthorised) signedOut("Your session ended; sign in again.");
  else say(err.message);
}

// --- ladders and pnl ------------------------------------------------------------------------------

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function legFromPosition(p) {
  return { ...p, trade_id: `${p.ladder_id}:${p.leg}`, entry_time_ms: null };
}

// Rows are kept by leg and updated in place (moved only when the order changes), so a row being
// clicked is never swapped for a new one under the pointer.
const legRows = new Map(); // trade_id -> tr

function legRow(leg) {
  const tr = document.createElement("tr");
  tr.dataset.trade = leg.trade_id;
  tr.dataset.symbol = leg.symbol;
  for (const cls of ["symbol", "num leg", "num qty", "num entry", "num ltp", "num stop", "num target",
    "num pnl", "num pnl-pct", "actions"]) cell(tr, "", cls);
  if (roleAllows("trader")) {
    const exit = document.createElement("button");
    exit.type = "button";
    exit.textContent = "Exit";
    exit.className = "small";
    exit.addEventListener("click", (event) => {
      event.stopPropagation();
      const l = state.legs.get(leg.trade_id) || leg;
      confirmThen(`Exit ${l.symbol} P${l.leg}?`,
        `Sell ${l.qty} ${l.symbol} at market now (leg ${l.trade_id}).`, null,
        () => api(`legs/${encodeURIComponent(l.trade_id)}/exit`, { method: "POST" }));
    });
    tr.lastChild.appendChild(exit);
  }
  return tr;
}

function fillRow(tr, leg, first) {
  const texts = [first ? leg.symbol : "", `P${leg.leg}`, String(leg.qty), fmt(leg.entry_price),
    fmt(leg.ltp), fmt(leg.stop), fmt(leg.target), fmt(leg.pnl), pct(leg.pnl_pct)];
  texts.forEach((text, i) => { if (tr.cells[i].textContent !== text) tr.cells[i].textContent = text; });
  tr.cells[7].className = `num pnl ${sign(leg.pnl)}`;
  tr.cells[8].className = `num pnl-pct ${sign(leg.pnl_pct)}`;
  tr.classList.toggle("ladder-start", first);
  tr.classList.toggle("selected", leg.symbol === state.chartSymbol);
}

function renderLegs() { drawNextFrame(drawLegs); }

function drawLegs() {
  const legs = [...state.legs.values()].sort((a, b) =>
    a.symbol.localeCompare(b.symbol) || a.ladder_id.localeCompare(b.ladder_id) || a.leg - b.leg);
  const body = $("legs").querySelector("tbody");
  const rows = [];
  let ladder = null;
  for (const leg of legs) {
    let tr = legRows.get(leg.trade_id);
    if (!tr) { tr = legRow(leg); legRows.set(leg.trade_id, tr); }
    fillRow(tr, leg, leg.ladder_id !== ladder);
    ladder = leg.ladder_id;
    rows.push(tr);
  }
  for (const [id, tr] of legRows) {
    if (!state.legs.has(id)) { tr.remove(); legRows.delete(id); }
  }
  const current = [...body.children];
  if (current.length !== rows.length || rows.some((tr, i) => current[i] !== tr)) {
    body.replaceChildren(...rows);
  }
  $("no-legs").hidden = legs.length > 0;
  $("open-legs").textContent = String(legs.length);
  const deployed = legs.reduce((s, l) => s + (l.entry_price || 0) * l.qty, 0);
  $("deployed").textContent = `${inr(deployed)} deployed`;
  renderSymbolChoice();
}

function setFigure(id, figures) {
  const el = $(id);
  el.textContent = inr(figures.total);
  el.className = `value ${sign(figures.total)}`;
  $(`${id}-split`).textContent =
    `realised ${inr(figures.realised)} · unrealised ${inr(figures.unrealised)}`;
}

function onPnl(pnl) {
  state.pnl = pnl;
  setFigure("pnl-day", pnl.day);
  setFigure("pnl-total", pnl.total);
  for (const p of pnl.legs || []) {
    const leg = state.legs.get(p.trade_id);
    if (leg) Object.assign(leg, { ltp: p.ltp, pnl: p.pnl, pnl_pct: p.pnl_pct });
  }
  if (pnl.legs) renderLegs();
  if (equityChart) equityChart.updateTotal(pnl.total.total, state.latestMs);
}

function onLeg(leg) {
  if (leg.status === "OPEN") {
    const known = state.legs.get(leg.trade_id);
    state.legs.set(leg.trade_id, { ...known, ...leg });
  } else {
    state.legs.delete(leg.trade_id);
  }
  if (leg.exit_time_ms) noteTime(leg.exit_time_ms);
  renderLegs();
  if (!state.chartSymbol && leg.status === "OPEN") chooseSymbol(leg.symbol);
  if (leg.symbol === state.chartSymbol) {
    const others = state.symbolLegs.filter((l) => l.trade_id !== leg.trade_id);
    state.symbolLegs = [...others, leg];
    priceChart.setLegs(state.symbolLegs);
  }
  if (leg.status === "CLOSED") drawNextFrame(loadEquity);
}

function noteTime(ms) { if (!state.latestMs || ms > state.latestMs) state.latestMs = ms; }

// --- chart ----------------------------------------------------------------------------------------

function renderSymbolChoice() {
  const select = $("chart-symbol");
  const symbols = new Set([...state.legs.values()].map((l) => l.symbol));
  if (state.chartSymbol) symbols.add(state.chartSymbol);
  const wanted = [...symbols].sort();
  const have = [...select.options].map((o) => o.value);
  if (wanted.join() !== have.join()) {
    select.replaceChildren(...wanted.map((s) => new Option(s, s)));
  }
  if (state.chartSymbol) select.value = state.chartSymbol;
}

function tradeToLeg(t) {
  return {
    trade_id: t.trade_id, symbol: t.symbol, ladder_id: t.ladder_id, leg: t.leg, qty: t.qty,
    entry_price: t.entry_price, stop: t.stop, target: t.target, status: t.status,
    entry_time_ms: t.entry_time ? Date.parse(t.entry_time) : null,
    exit_time_ms: t.exit_time ? Date.parse(t.exit_time) : null,
    exit_price: t.exit_price, exit_reason: t.exit_reason,
  };
}

async function loadChart() {
  const symbol = state.chartSymbol;
  if (!symbol) return;
  const path = encodeURIComponent(symbol);
  const [bars, trades] = await Promise.all([
    api(`candles/${path}?limit=300`), api(`trades?symbol=${path}&limit=200`)]);
  if (symbol !== state.chartSymbol) return;
  priceChart.load(symbol, bars, 15);
  // A leg the legs channel already told about is newer than the table's row.
  const live = new Map(state.symbolLegs.map((l) => [l.trade_id, l]));
  state.symbolLegs = trades.items.map((t) => ({ ...tradeToLeg(t), ...live.get(t.trade_id) }));
  for (const [id, leg] of live) if (!state.symbolLegs.some((l) => l.trade_id === id)) state.symbolLegs.push(leg);
  priceChart.setLegs(state.symbolLegs);
}

function chooseSymbol(symbol) {
  if (!symbol || symbol === state.chartSymbol) return;
  state.chartSymbol = symbol;
  state.symbolLegs = [...state.legs.values()].filter((l) => l.symbol === symbol);
  renderSymbolChoice();
  renderLegs();
  if (market) market.subscribe({ channels: ["ticks", "candles"], symbols: [symbol] });
  loadChart().catch(failed);
}

async function loadEquity() {
  try {
    equityChart.load(await api("pnl/equity"), state.latestMs);
  } catch (err) { failed(err); }
}

// --- log ------------------------------------------------------------------------------------------

function logItem(kind, ms, symbol, text, level) {
  return { kind, ms, symbol, text, level: level || "" };
}

function fromEvent(channel, d) {
  const who = d.symbol ? `${d.symbol}${d.leg ? ` P${d.leg}` : ""}` : "";
  const ms = d.ts_ms || Date.now();
  switch (d.type) {
    case "OrderAccepted": return logItem("order", ms, who, `order accepted (${d.order_id})`);
    case "OrderFilled": return logItem("order", ms, who, `${d.side} ${d.qty} filled at ${fmt(d.price)}`);
    case "OrderRejected": return logItem("order", ms, who, `order rejected: ${d.reason}`, "warning");
    case "GttPlaced": return logItem("gtt", ms, who,
      `GTT placed: stop ${fmt(d.trigger)}${d.target ? `, target ${fmt(d.target)}` : ""}`);
    case "GttModified": return logItem("gtt", ms, who, `stop raised to ${fmt(d.trigger)}`);
    case "GttTriggered": return logItem("gtt", ms, who, `GTT triggered at ${fmt(d.price)}`);
    case "GttDeleted": return logItem("gtt", ms, who, "GTT deleted");
    case "Alert": return logItem("alert", Date.now(), d.symbol || "", `${d.code}: ${d.message}`, d.level);
    default: return null;
  }
}

function renderLog() { drawNextFrame(drawLog); }

function drawLog() {
  const items = state.log.filter((i) => state.logKinds.has(i.kind)).slice(0, LOG_MAX);
  $("log").replaceChildren(...items.map((i) => {
    const li = document.createElement("li");
    li.className = `${i.kind} ${i.level}`;
    const time = document.createElement("time");
    time.textContent = clock(i.ms);
    const kind = document.createElement("span");
    kind.className = "kind";
    kind.textContent = i.kind;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = i.symbol;
    const text = document.createElement("span");
    text.textContent = i.text;
    li.append(time, kind, who, text);
    return li;
  }));
}

async function loadLog() {
  const [orders, gtts, alerts] = await Promise.all(
    [api("orders?limit=60"), api("gtts?limit=60"), api("alerts?limit=60")]);
  const items = [
    ...orders.items.map((o) => logItem("order", Date.parse(o.updated_at), `${o.symbol} P${o.leg}`,
      `${o.side} ${o.qty} ${o.state.toLowerCase()}${o.average_price ? ` at ${fmt(o.average_price)}` : ""}` +
      `${o.reason ? ` — ${o.reason}` : ""}`, o.state === "REJECTED" ? "warning" : "")),
    ...gtts.items.map((g) => logItem("gtt", Date.parse(g.updated_at), `${g.symbol} P${g.leg}`,
      `GTT ${g.state.toLowerCase()}: stop ${fmt(g.trigger_price)}` +
      `${g.target_price ? `, target ${fmt(g.target_price)}` : ""}`)),
    ...alerts.items.map((a) => logItem("alert", Date.parse(a.ts), a.symbol || "",
      `${a.code}: ${a.message}`, a.level)),
  ];
  state.log = items.sort((a, b) => b.ms - a.ms).slice(0, LOG_MAX);
  renderLog();
}

// --- status and controls ---------------------------------------------------------------------------

const RANK = { viewer: 0, trader: 1, admin: 2 };
function roleAllows(role) { return state.auth && RANK[state.auth.role] >= RANK[role]; }

async function loadStatus() {
  const s = await api("strategy");
  $("strategy").textContent = `strategy ${s.state}`;
  $("strategy").hidden = false;
  $("halted").hidden = !s.halted;
}

function confirmThen(title, text, reason, action) {
  const dialog = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-reason-wrap").hidden = reason === null;
  $("confirm-reason").value = reason || "";
  dialog.onclose = async () => {
    if (dialog.returnValue !== "ok") return;
    try {
      await action($("confirm-reason").value.trim() || reason);
      say(`${title.replace(/\?$/, "")}: done`);
      await loadStatus();
    } catch (err) { failed(err); }
  };
  dialog.returnValue = "";
  dialog.showModal();
}

// [id, label, least role, confirmation text, needs a reason, call]
const CONTROLS = [
  ["start", "Start strategy", "trader", "New entries will be taken again.", false,
    () => api("strategy/start", { method: "POST" })],
  ["stop", "Stop strategy", "trader", "No new entries; open legs keep their stops.", false,
    () => api("strategy/stop", { method: "POST" })],
  ["halt", "Halt", "admin", "Kill switch: no new risk, open entry orders cancelled. Stops stay.",
    true, (reason) => api("halt", { method: "POST", body: { reason } })],
  ["resume", "Resume", "admin", "Clear every active halt.", false,
    () => api("resume", { method: "POST" })],
  ["flatten", "Flatten", "admin", "Exit EVERY open leg at market now.", false,
    () => api("flatten", { method: "POST", body: { confirm: true } })],
];

function renderControls() {
  // Buttons a role may not use are not drawn at all (the api refuses them anyway).
  const buttons = CONTROLS.filter(([, , role]) => roleAllows(role)).map(
    ([id, label, , text, needsReason, call]) => {
      const b = document.createElement("button");
      b.type = "button";
      b.id = `control-${id}`;
      b.textContent = label;
      if (["halt", "flatten"].includes(id)) b.className = "danger";
      b.addEventListener("click", () => confirmThen(`${label}?`, text,
        needsReason ? "halted from the dashboard" : null, call));
      return b;
    });
  $("control-buttons").replaceChildren(...buttons);
  $("controls").hidden = buttons.length === 0;
}

// --- live feeds -----------------------------------------------------------------------------------

function onEvent(msg) {
  const d = msg.data;
  switch (msg.channel) {
    case "legs": if (d.type === "Leg") onLeg(d); break;
    case "pnl": onPnl(d); break;
    case "status": loadStatus().catch(failed); break;
    case "orders": case "gtts": case "alerts": {
      if (d.ts_ms) noteTime(d.ts_ms);
      const item = fromEvent(msg.channel, d);
      if (item) { state.log.unshift(item); state.log.length = Math.min(state.log.length, LOG_MAX); renderLog(); }
      break;
    }
    case "system":
      if (d.type === "resync") refresh();
      break;
    default:
  }
}

// Ticks reach the chart at most ten times a second, however fast they come: a software-painted
// chart redrawn for every tick of a fast feed starved the page of CPU.
const TICK_DRAW_MS = 100;
let waitingTicks = [];
function drawTicks() {
  const ticks = waitingTicks;
  waitingTicks = [];
  for (const t of ticks) priceChart.onTick(t);
}

function onMarket(msg) {
  if (msg.channel === "ticks") {
    if (!waitingTicks.length) setTimeout(drawTicks, TICK_DRAW_MS);
    for (const t of msg.data.ticks) { noteTime(t.ts_ms); waitingTicks.push(t); }
  } else if (msg.channel === "candles") {
    drawTicks(); // the ticks before a closed bar go first
    priceChart.onCandle(msg.data);
  }
}

let liveStates = {};
function onFeedState(name, value, detail) {
  liveStates[name] = value;
  const chip = $("live");
  const all = Object.values(liveStates);
  chip.hidden = false;
  chip.textContent = all.every((s) => s === "live") ? "live" : "reconnecting…";
  chip.className = `chip ${all.every((s) => s === "live") ? "ok" : "warn"}`;
  if (value === "reconnecting") {
    say(`live feed lost (${detail}); reconnecting`);
    whoAmI().catch(() => signedOut("Your session ended; sign in again."));
  }
}

async function refresh() {
  try {
    const [positions, pnl] = await Promise.all([api("positions"), api("pnl"), loadStatus()]);
    state.legs = new Map(positions.map((p) => [`${p.ladder_id}:${p.leg}`, legFromPosition(p)]));
    onPnl({ ...pnl, legs: null });
    renderLegs();
    if (!state.chartSymbol && positions.length) chooseSymbol(positions[0].symbol);
    else await loadChart();
    await Promise.all([loadLog(), loadEquity()]);
    say("");
  } catch (err) { failed(err); }
}

function startFeeds() {
  const key = state.auth.mode === "key" ? state.auth.key : null;
  liveStates = {};
  events = new LiveFeed({ key, onMessage: onEvent, onOpen: refresh,
                          onState: (s, d) => onFeedState("events", s, d) });
  market = new LiveFeed({ key, onMessage: onMarket,
                          onState: (s, d) => onFeedState("market", s, d) });
  events.start({ channels: ["orders", "gtts", "legs", "alerts", "pnl", "status"] });
  market.start(state.chartSymbol
    ? { channels: ["ticks", "candles"], symbols: [state.chartSymbol] } : { channels: [] });
}

function stopFeeds() {
  if (events) events.stop();
  if (market) market.stop();
  events = market = null;
}

// --- signing in -----------------------------------------------------------------------------------

async function whoAmI() {
  const me = await api("auth/me");
  state.auth = { ...state.auth, name: me.name, role: me.role, csrf: me.csrf_token || state.auth.csrf };
  return me;
}

function signedIn() {
  $("login").hidden = true;
  $("board").hidden = false;
  $("signout").hidden = false;
  $("who").hidden = false;
  $("who").textContent = `${state.auth.name} (${state.auth.role})`;
  $("login-error").textContent = "";
  if (!priceChart) {
    priceChart = new RatchetCharts.PriceChart($("chart"), $("chart-legend"));
    equityChart = new RatchetCharts.EquityChart($("equity"));
  }
  renderControls();
  startFeeds();
}

function signedOut(message) {
  stopFeeds();
  sessionStorage.removeItem(KEY_STORE);
  state.auth = null;
  state.legs = new Map();
  legRows.clear();
  $("legs").querySelector("tbody").replaceChildren();
  $("login").hidden = false;
  $("board").hidden = true;
  $("signout").hidden = true;
  $("who").hidden = true;
  $("strategy").hidden = true;
  $("halted").hidden = true;
  $("live").hidden = true;
  $("login-error").textContent = message || "";
  say("");
}

async function start() {
  const key = sessionStorage.getItem(KEY_STORE);
  state.auth = key ? { mode: "key", key } : { mode: "cookie" };
  try {
    await whoAmI();
    signedIn();
  } catch (err) {
    signedOut(key ? "The key was refused (unknown, expired or revoked)." : "");
  }
}

// --- theme ----------------------------------------------------------------------------------------

function applyTheme(theme) {
  if (theme) document.documentElement.dataset.theme = theme;
  else delete document.documentElement.dataset.theme;
  if (priceChart) { priceChart.applyTheme(); equityChart.applyTheme(); }
}

function toggleTheme() {
  const dark = document.documentElement.dataset.theme
    ? document.documentElement.dataset.theme === "dark"
    : matchMedia("(prefers-color-scheme: dark)").matches;
  const next = dark ? "light" : "dark";
  localStorage.setItem(THEME_STORE, next);
  applyTheme(next);
}

document.addEventListener("DOMContentLoaded", () => {
  applyTheme(localStorage.getItem(THEME_STORE));
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => applyTheme(
    localStorage.getItem(THEME_STORE)));
  $("theme").addEventListener("click", toggleTheme);
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      state.auth = { mode: "cookie" };
      const res = await fetch("/api/v1/auth/login", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ username: $("username").value.trim(), password: $("password").value }),
      });
      if (!res.ok) {
        let detail = res.statusText;
        try { detail = (await res.json()).detail || detail; } catch (_) { /* not JSON */ }
        throw new Error(detail);
      }
      const session = await res.json();
      $("password").value = "";
      state.auth = { mode: "cookie", csrf: session.csrf_token, name: session.username, role: session.role };
      signedIn();
    } catch (err) { $("login-error").textContent = err.message; }
  });
  $("key-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_STORE, key);
    $("api-key").value = "";
    await start();
  });
  $("signout").addEventListener("click", async () => {
    if (state.auth && state.auth.mode === "cookie") {
      try { await api("auth/logout", { method: "POST" }); } catch (_) { /* gone already */ }
    }
    signedOut("");
  });
  $("chart-symbol").addEventListener("change", (e) => chooseSymbol(e.target.value));
  $("legs").querySelector("tbody").addEventListener("click", (e) => {
    const row = e.target.closest("tr");
    if (row) chooseSymbol(row.dataset.symbol);
  });
  for (const box of document.querySelectorAll(".filters input")) {
    box.addEventListener("change", () => {
      if (box.checked) state.logKinds.add(box.value); else state.logKinds.delete(box.value);
      renderLog();
    });
  }
  // For people poking at the page, and for the browser test: what the chart shows.
  window.ratchet = {
    chartSymbol: () => state.chartSymbol,
    chartLines: () => (priceChart ? priceChart.priceLines() : []),
    legs: () => [...state.legs.values()],
  };
  start();
});

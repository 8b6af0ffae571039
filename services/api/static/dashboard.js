// Ratchet dashboard: asks for an API key (kept in sessionStorage), then shows positions and PnL,
// refreshing every few seconds. Talks only to this origin; builds the DOM without innerHTML.
"use strict";

const KEY_STORE = "ratchet.apiKey";
const REFRESH_MS = 3000;
const $ = (id) => document.getElementById(id);
let timer = null;

const money = new Intl.NumberFormat("en-IN", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const fmt = (v) => (v === null || v === undefined ? "–" : money.format(v));
const pct = (v) => (v === null || v === undefined ? "–" : `${v.toFixed(2)}%`);
const inr = (v) => (v === null || v === undefined ? "–" : `${v < 0 ? "−" : ""}₹${fmt(Math.abs(v))}`);
const sign = (v) => (v > 0 ? "up" : v < 0 ? "down" : "");

async function api(path) {
  const key = sessionStorage.getItem(KEY_STORE);
  const res = await fetch(`/api/v1/${path}`, { headers: { "X-API-Key": key || "" } });
  if (res.status === 401) {
    forget("The key was refused (unknown, expired or revoked).");
    throw new Error("unauthorised");
  }
  if (!res.ok) {
    let detail = res.statusText;
    try { detail = (await res.json()).detail || detail; } catch (_) { /* not JSON */ }
    throw new Error(`${res.status} ${detail}`);
  }
  return res.json();
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
}

function renderPositions(positions) {
  const body = $("positions").querySelector("tbody");
  body.replaceChildren();
  for (const p of positions) {
    const tr = document.createElement("tr");
    cell(tr, p.symbol);
    cell(tr, p.ladder_id, "muted");
    cell(tr, `P${p.leg}`, "num");
    cell(tr, String(p.qty), "num");
    cell(tr, fmt(p.entry_price), "num");
    cell(tr, fmt(p.initial_stop), "num");
    cell(tr, fmt(p.stop), "num");
    cell(tr, fmt(p.target), "num");
    cell(tr, fmt(p.ltp), "num");
    cell(tr, fmt(p.pnl), `num ${sign(p.pnl)}`);
    cell(tr, pct(p.pnl_pct), `num ${sign(p.pnl_pct)}`);
    cell(tr, p.status);
    body.appendChild(tr);
  }
  $("no-positions").hidden = positions.length > 0;
  $("open-legs").textContent = String(positions.length);
  const deployed = positions.reduce((s, p) => s + (p.entry_price || 0) * p.qty, 0);
  $("deployed").textContent = `${inr(deployed)} deployed`;
}

function setFigure(id, figures) {
  const el = $(id);
  el.textContent = inr(figures.total);
  el.className = `value ${sign(figures.total)}`;
  $(`${id}-split`).textContent =
    `realised ${inr(figures.realised)} · unrealised ${inr(figures.unrealised)}`;
}

function renderPnl(pnl) {
  setFigure("pnl-day", pnl.day);
  setFigure("pnl-total", pnl.total);
  const body = $("by-symbol").querySelector("tbody");
  body.replaceChildren();
  for (const s of pnl.by_symbol) {
    const tr = document.createElement("tr");
    cell(tr, s.symbol);
    cell(tr, String(s.open_legs), "num");
    cell(tr, fmt(s.realised_day), `num ${sign(s.realised_day)}`);
    cell(tr, fmt(s.realised), `num ${sign(s.realised)}`);
    cell(tr, fmt(s.unrealised), `num ${sign(s.unrealised)}`);
    cell(tr, fmt(s.total), `num ${sign(s.total)}`);
    body.appendChild(tr);
  }
  $("no-symbols").hidden = pnl.by_symbol.length > 0;
}

async function refresh() {
  try {
    const [positions, pnl, strategy] = await Promise.all(
      [api("positions"), api("pnl"), api("strategy")]);
    renderPositions(positions);
    renderPnl(pnl);
    $("strategy").textContent = `strategy ${strategy.state}`;
    $("strategy").hidden = false;
    $("halted").hidden = !strategy.halted;
    $("status").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    if (err.message !== "unauthorised") $("status").textContent = `refresh failed: ${err.message}`;
  }
}

function show(signedIn) {
  $("login").hidden = signedIn;
  $("board").hidden = !signedIn;
  $("signout").hidden = !signedIn;
  if (!signedIn) { $("strategy").hidden = true; $("halted").hidden = true; }
  clearInterval(timer);
  timer = null;
  if (signedIn) {
    refresh();
    timer = setInterval(refresh, REFRESH_MS);
  }
}

function forget(message) {
  sessionStorage.removeItem(KEY_STORE);
  $("login-error").textContent = message || "";
  $("status").textContent = "";
  show(false);
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_STORE, key);
    $("api-key").value = "";
    $("login-error").textContent = "";
    show(true);
  });
  $("signout").addEventListener("click", () => forget(""));
  show(Boolean(sessionStorage.getItem(KEY_STORE)));
});

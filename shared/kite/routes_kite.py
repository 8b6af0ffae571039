"""Kite Connect v3 REST routes the simulator serves (the ones Ratchet uses, and a few more)."""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from .app import LimiterDep, SessionDep, SimDep, form, ok
from .book import order_to_kite
from .clock import fmt_ts, parse_ist
from .errors import input_error
from .gtt import gtt_to_kite
from .market import InstrumentState
from .models import GttForm, ModifyOrderForm, PlaceOrderForm, parse_form, rupees

router = APIRouter()

CSV_COLUMNS = ("instrument_token", "exchange_token", "tradingsymbol", "name", "last_price",
               "expiry", "strike", "tick_size", "lot_size", "instrument_type", "segment",
               "exchange")


# -- session and user ------------------------------------------------------------------------
@router.post("/session/token")
async def session_token(request: Request, sim: SimDep) -> Response:
    data = await form(request)
    s = sim.create_session(data.get("api_key", ""), data.get("request_token", ""),
                           data.get("checksum", ""))
    return ok({**_profile(), "api_key": s["api_key"], "access_token": s["access_token"],
               "public_token": s["public_token"], "enctoken": s["enctoken"],
               "refresh_token": "", "silo": "", "login_time": fmt_ts(s["login_ms"]),
               "meta": {"demat_consent": "physical"}})


@router.delete("/session/token")
async def session_invalidate(request: Request, sim: SimDep) -> Response:
    token = request.query_params.get("access_token")
    if token:
        sim.invalidate(token)
    return ok(True)


def _profile() -> dict[str, Any]:
    return {"user_type": "individual", "email": "sim@example.invalid", "user_name": "Kite Sim",
            "user_shortname": "Sim", "broker": "ZERODHA", "exchanges": ["NSE"],
            "products": ["CNC", "NRML", "MIS"],
            "order_types": ["MARKET", "LIMIT", "SL", "SL-M"], "avatar_url": None,
            "user_id": "SIM001"}


@router.get("/user/profile")
async def profile(session: SessionDep) -> Response:
    return ok({**_profile(), "meta": {"demat_consent": "physical"}})


# -- instruments and quotes ------------------------------------------------------------------
@router.get("/instruments")
@router.get("/instruments/{exchange}")
async def instruments(sim: SimDep, session: SessionDep, exchange: str | None = None) -> Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for inst in sim.instruments:
        if exchange and exchange != inst.exchange:
            continue
        st = sim.market.states[inst.token]
        writer.writerow((inst.token, inst.exchange_token, inst.symbol, inst.name,
                         rupees(st.close), "", 0.0, inst.tick / 100, inst.lot_size, "EQ",
                         inst.exchange, inst.exchange))
    return Response(out.getvalue(), media_type="text/csv")


def _requested(request: Request, sim: SimDep, limit: int) -> list[tuple[str, InstrumentState]]:
    keys = request.query_params.getlist("i")
    if len(keys) > limit:
        raise input_error(f"Too many instruments: at most {limit} per request.")
    found = []
    for key in keys:
        st = sim.market.lookup(key)
        if st is not None:  # Kite leaves unknown instruments out rather than failing
            found.append((key, st))
    return found


def _ohlc(st: InstrumentState) -> dict[str, float]:
    return {"open": rupees(st.open), "high": rupees(st.high), "low": rupees(st.low),
            "close": rupees(st.close)}


@router.get("/quote")
async def quote(request: Request, sim: SimDep, session: SessionDep) -> Response:
    data = {}
    now = fmt_ts(sim.clock.now_ms)
    for key, st in _requested(request, sim, 500):
        buy, sell = st.depth()
        data[key] = {
            "instrument_token": st.inst.token, "timestamp": now,
            "last_trade_time": fmt_ts(st.last_trade_ms), "last_price": rupees(st.ltp),
            "last_quantity": st.last_qty,
            "buy_quantity": sum(q for _, q, _ in buy) * 40,
            "sell_quantity": sum(q for _, q, _ in sell) * 40, "volume": st.volume,
            "average_price": rupees(st.average_price), "oi": 0, "oi_day_high": 0,
            "oi_day_low": 0, "net_change": rupees(st.ltp - st.close),
            "lower_circuit_limit": rupees(st.lower), "upper_circuit_limit": rupees(st.upper),
            "ohlc": _ohlc(st),
            "depth": {side: [{"price": rupees(p), "quantity": q, "orders": n} for p, q, n in rows]
                      for side, rows in (("buy", buy), ("sell", sell))}}
    return ok(data)


@router.get("/quote/ohlc")
async def quote_ohlc(request: Request, sim: SimDep, session: SessionDep) -> Response:
    return ok({key: {"instrument_token": st.inst.token, "last_price": rupees(st.ltp),
                     "ohlc": _ohlc(st)} for key, st in _requested(request, sim, 1000)})


@router.get("/quote/ltp")
async def quote_ltp(request: Request, sim: SimDep, session: SessionDep) -> Response:
    return ok({key: {"instrument_token": st.inst.token, "last_price": rupees(st.ltp)}
               for key, st in _requested(request, sim, 1000)})


@router.get("/instruments/historical/{token}/{interval}")
async def historical(token: int, interval: str, request: Request, sim: SimDep,
                     session: SessionDep, limiter: LimiterDep) -> Response:
    limiter.check(session["api_key"], "historical")
    q = request.query_params
    try:
        from_ms, to_ms = parse_ist(q.get("from", "")), parse_ist(q.get("to", ""))
    except ValueError as exc:
        raise input_error("Invalid `from` or `to` date.") from exc
    rows = sim.historical(token, interval, from_ms, to_ms, q.get("oi") in ("1", "true"))
    return ok({"candles": rows})


# -- orders ----------------------------------------------------------------------------------
@router.post("/orders/{variety}")
async def place_order(variety: str, request: Request, sim: SimDep, session: SessionDep,
                      limiter: LimiterDep) -> Response:
    limiter.check(session["api_key"], "orders")
    order = sim.book.place(parse_form(PlaceOrderForm, await form(request)), variety)
    return ok({"order_id": order.order_id})


@router.put("/orders/{variety}/{order_id}")
async def modify_order(variety: str, order_id: str, request: Request, sim: SimDep,
                       session: SessionDep) -> Response:
    order = sim.book.modify(order_id, variety, parse_form(ModifyOrderForm, await form(request)))
    return ok({"order_id": order.order_id})


@router.delete("/orders/{variety}/{order_id}")
async def cancel_order(variety: str, order_id: str, sim: SimDep,
                       session: SessionDep) -> Response:
    return ok({"order_id": sim.book.cancel(order_id, variety).order_id})


@router.get("/orders")
async def orders(sim: SimDep, session: SessionDep) -> Response:
    return ok([order_to_kite(o) for o in sim.book.today_orders()])


@router.get("/orders/{order_id}")
async def order_history(order_id: str, sim: SimDep, session: SessionDep) -> Response:
    return ok(sim.book.get(order_id).history)


@router.get("/orders/{order_id}/trades")
async def order_trades(order_id: str, sim: SimDep, session: SessionDep) -> Response:
    sim.book.get(order_id)
    return ok([t.to_kite(fmt_ts) for t in sim.book.trades if t.order_id == order_id])


@router.get("/trades")
async def trades(sim: SimDep, session: SessionDep) -> Response:
    return ok([t.to_kite(fmt_ts) for t in sim.book.today_trades()])


# -- portfolio -------------------------------------------------------------------------------
@router.get("/portfolio/positions")
async def positions(sim: SimDep, session: SessionDep) -> Response:
    return ok(sim.portfolio.positions_kite())


@router.get("/portfolio/holdings")
async def holdings(sim: SimDep, session: SessionDep) -> Response:
    return ok(sim.portfolio.holdings_kite())


@router.get("/user/margins")
@router.get("/user/margins/{segment}")
async def margins(sim: SimDep, session: SessionDep, segment: str | None = None) -> Response:
    equity = {"enabled": True, "net": 1_000_000.0,
              "available": {"adhoc_margin": 0, "cash": 1_000_000.0, "opening_balance": 1e6,
                            "live_balance": 1_000_000.0, "collateral": 0, "intraday_payin": 0},
              "utilised": {"debits": 0, "exposure": 0, "m2m_realised": 0, "m2m_unrealised": 0,
                           "option_premium": 0, "payout": 0, "span": 0, "holding_sales": 0,
                           "turnover": 0, "liquid_collateral": 0, "stock_collateral": 0,
                           "delivery": 0}}
    if segment == "equity":
        return ok(equity)
    return ok({"equity": equity, "commodity": {**equity, "enabled": False, "net": 0}})


# -- GTT -------------------------------------------------------------------------------------
def _gtt_form(data: dict[str, str]) -> GttForm:
    try:
        body = {"type": data.get("type"), "condition": orjson.loads(data.get("condition", "")),
                "orders": orjson.loads(data.get("orders", ""))}
    except orjson.JSONDecodeError as exc:
        raise input_error("Invalid `condition` or `orders`: not JSON.") from exc
    result: GttForm = parse_form(GttForm, body)
    return result


@router.post("/gtt/triggers")
async def place_gtt(request: Request, sim: SimDep, session: SessionDep) -> Response:
    return ok({"trigger_id": sim.gtts.create(_gtt_form(await form(request))).id})


@router.get("/gtt/triggers")
async def list_gtts(sim: SimDep, session: SessionDep) -> Response:
    return ok([gtt_to_kite(g) for g in sorted(sim.gtts.gtts.values(), key=lambda g: -g.id)])


@router.get("/gtt/triggers/{trigger_id}")
async def get_gtt(trigger_id: int, sim: SimDep, session: SessionDep) -> Response:
    return ok(gtt_to_kite(sim.gtts.get(trigger_id)))


@router.put("/gtt/triggers/{trigger_id}")
async def modify_gtt(trigger_id: int, request: Request, sim: SimDep,
                     session: SessionDep) -> Response:
    g = sim.gtts.modify(trigger_id, _gtt_form(await form(request)))
    return ok({"trigger_id": g.id})


@router.delete("/gtt/triggers/{trigger_id}")
async def delete_gtt(trigger_id: int, sim: SimDep, session: SessionDep) -> Response:
    return ok({"trigger_id": sim.gtts.delete(trigger_id).id})


"""``/_sim`` admin routes: the clock, prices, days and faults, for tests and chaos runs.

They are outside Kite's API, unauthenticated (the server binds to 127.0.0.1 only) and never
subject to injected faults.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from .app import SimDep, ok
from .errors import input_error
from .faults import HttpFault
from .models import to_paise

router = APIRouter(prefix="/_sim")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClockBody(_Body):
    paused: bool | None = None
    speed: float | None = Field(default=None, gt=0)


class AdvanceBody(_Body):
    seconds: float = Field(gt=0, le=7 * 86_400)
    step_s: float = Field(default=1.0, gt=0)


class PriceBody(_Body):
    symbol: str
    exchange: str = "NSE"
    price: float = Field(gt=0)


class RejectBody(_Body):
    count: int = Field(default=1, ge=0)
    message: str | None = None


class DropBody(_Body):
    refuse_s: float = Field(default=0.0, ge=0)


class StallBody(_Body):
    seconds: float = Field(gt=0, le=3600)
    heartbeats: bool = False


@router.get("/state")
async def state(sim: SimDep) -> Response:
    return ok(sim.state())


@router.post("/clock")
async def clock(body: ClockBody, sim: SimDep) -> Response:
    if body.paused is not None:
        sim.clock.paused = body.paused
    if body.speed is not None:
        sim.clock.speed = body.speed
    sim.save()
    return ok(sim.state())


@router.post("/advance")
async def advance(body: AdvanceBody, sim: SimDep) -> Response:
    sim.advance(body.seconds, body.step_s)
    sim.save()
    return ok(sim.state())


@router.post("/next_day")
async def next_day(sim: SimDep) -> Response:
    sim.next_day()
    return ok(sim.state())


@router.post("/price")
async def price(body: PriceBody, sim: SimDep) -> Response:
    st = sim.market.by_key.get(f"{body.exchange}:{body.symbol}")
    if st is None:
        raise input_error(f"unknown instrument {body.exchange}:{body.symbol}")
    sim.set_price(st, to_paise(str(round(body.price, 2))))
    sim.save()
    return ok({"last_price": st.ltp / 100, "lower_circuit_limit": st.lower / 100,
               "upper_circuit_limit": st.upper / 100})


@router.get("/faults")
async def faults(sim: SimDep) -> Response:
    return ok(sim.faults.describe())


@router.delete("/faults")
async def clear_faults(request: Request, sim: SimDep) -> Response:
    sim.faults.clear()
    hub: Any = request.app.state.hub
    hub.stalled_until = hub.refuse_until = 0.0
    return ok(sim.faults.describe())


@router.post("/faults/http")
async def http_fault(body: HttpFault, sim: SimDep) -> Response:
    sim.faults.add(body)
    return ok(sim.faults.describe())


@router.post("/faults/reject")
async def reject(body: RejectBody, sim: SimDep) -> Response:
    sim.faults.reject_left = body.count
    if body.message:
        sim.faults.reject_message = body.message
    return ok(sim.faults.describe())


@router.post("/ticker/drop")
async def drop(body: DropBody, request: Request) -> Response:
    return ok({"dropped": request.app.state.hub.drop_all(body.refuse_s)})


@router.post("/ticker/stall")
async def stall(body: StallBody, request: Request) -> Response:
    request.app.state.hub.stall(body.seconds, body.heartbeats)
    return ok({"stalled_s": body.seconds})


@router.post("/sessions/expire")
async def expire_sessions(sim: SimDep) -> Response:
    return ok({"expired": sim.invalidate()})

"""Commands: strategy start/stop (trader), exit a leg (trader), halt/resume/flatten (admin).

Each writes its effect and an audit row in one transaction and announces itself on ``control``
(see ``commands``). Read: GET strategy (status) and GET halts (viewer)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, status
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared.contracts.messages import (
    ExitRequested,
    Flatten,
    Halt,
    Resume,
    StrategyStart,
    StrategyStop,
)
from shared.store.models import AuditEntry, HaltRecord, Trade

from ..commands import command
from ..deps import (
    IDEMPOTENCY_PROBLEMS,
    IDEMPOTENT,
    Admin,
    ContextDep,
    SessionDep,
    Trader,
    Viewer,
)
from ..paging import Limit, Offset, fetch_page
from ..problems import ApiProblem, problem_responses
from ..schemas import Page
from ..schemas_control import (
    Accepted,
    ExitOut,
    FlattenIn,
    HaltIn,
    HaltOut,
    ResumeOut,
    StrategyStatus,
)

strategy_router = APIRouter(prefix="/strategy", tags=["strategy"])
halts_router = APIRouter(tags=["halts"])
legs_router = APIRouter(prefix="/legs", tags=["positions"])

STRATEGY_ACTIONS = ("strategy.start", "strategy.stop")


def strategy_status(session: Session) -> StrategyStatus:
    last = session.scalars(
        select(AuditEntry)
        .where(AuditEntry.action.in_(STRATEGY_ACTIONS))
        .order_by(AuditEntry.id.desc())
        .limit(1)
    ).first()
    halted = session.scalar(select(HaltRecord.id).where(HaltRecord.active).limit(1)) is not None
    return StrategyStatus(
        state="stopped" if last is not None and last.action == "strategy.stop" else "running",
        changed_at=last.ts if last else None,
        changed_by=last.actor if last else None,
        halted=halted,
    )


def halt_out(h: HaltRecord) -> HaltOut:
    return HaltOut(
        id=h.id, kind=h.kind, reason=h.reason, by=h.by, active=h.active, created_at=h.created_at,
        cleared_at=h.cleared_at, cleared_by=h.cleared_by,
    )


@strategy_router.get("", response_model=StrategyStatus, summary="Strategy state and halts")
def get_strategy(session: SessionDep, caller: Viewer) -> StrategyStatus:
    return strategy_status(session)


@strategy_router.post(
    "/start", response_model=StrategyStatus, summary="Start the strategy",
    dependencies=IDEMPOTENT, responses=IDEMPOTENCY_PROBLEMS,
)
def start_strategy(ctx: ContextDep, caller: Trader) -> StrategyStatus:
    with command(ctx, caller) as cmd:
        cmd.audit("strategy.start", "strategy", ctx.settings.strategy.name)
        cmd.announce(StrategyStart(by=caller.actor))
    with ctx.sessions() as session:
        return strategy_status(session)


@strategy_router.post(
    "/stop", response_model=StrategyStatus, summary="Stop new entries",
    dependencies=IDEMPOTENT, responses=IDEMPOTENCY_PROBLEMS,
)
def stop_strategy(ctx: ContextDep, caller: Trader) -> StrategyStatus:
    with command(ctx, caller) as cmd:
        cmd.audit("strategy.stop", "strategy", ctx.settings.strategy.name)
        cmd.announce(StrategyStop(by=caller.actor))
    with ctx.sessions() as session:
        return strategy_status(session)


@halts_router.get("/halts", response_model=Page[HaltOut], summary="Halts, newest first")
def list_halts(
    session: SessionDep,
    caller: Viewer,
    active: bool | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[HaltOut]:
    query = select(HaltRecord).order_by(HaltRecord.id.desc())
    if active is not None:
        query = query.where(HaltRecord.active.is_(active))
    rows, total = fetch_page(session, query, limit, offset)
    return Page[HaltOut](items=[halt_out(h) for h in rows], total=total, limit=limit,
                         offset=offset)


@halts_router.post(
    "/halt", response_model=HaltOut, status_code=status.HTTP_201_CREATED,
    dependencies=IDEMPOTENT, responses=IDEMPOTENCY_PROBLEMS,
    summary="Kill switch: halt new risk (stops stay; exits are never blocked)",
)
def halt(ctx: ContextDep, caller: Admin, body: HaltIn) -> HaltOut:
    with command(ctx, caller) as cmd:
        record = HaltRecord(kind="kill_switch", reason=body.reason, by=caller.actor, active=True)
        cmd.session.add(record)
        cmd.session.flush()
        cmd.session.refresh(record)
        out = halt_out(record)
        cmd.audit("halt", "halt", str(record.id), after=out.model_dump(mode="json"))
        cmd.announce(Halt(reason=body.reason, by=caller.actor, cancel_entries=body.cancel_entries))
    return out


@halts_router.post(
    "/resume", response_model=ResumeOut, summary="Clear every active halt",
    dependencies=IDEMPOTENT, responses=IDEMPOTENCY_PROBLEMS,
)
def resume(ctx: ContextDep, caller: Admin) -> ResumeOut:
    with command(ctx, caller) as cmd:
        now = datetime.now(UTC)
        rows = cmd.session.scalars(
            update(HaltRecord)
            .where(HaltRecord.active.is_(True))
            .values(active=False, cleared_at=now, cleared_by=caller.actor)
            .returning(HaltRecord),
            execution_options={"synchronize_session": False},
        ).all()
        cleared = [halt_out(h) for h in rows]
        cmd.audit("resume", "halt", None, after={"cleared": [h.id for h in cleared]})
        cmd.announce(Resume(by=caller.actor))
    return ResumeOut(cleared=cleared)


@halts_router.post(
    "/flatten", response_model=Accepted, status_code=status.HTTP_202_ACCEPTED,
    dependencies=IDEMPOTENT, responses=IDEMPOTENCY_PROBLEMS,
    summary="Exit every open leg",
)
def flatten(ctx: ContextDep, caller: Admin, body: FlattenIn) -> Accepted:
    with command(ctx, caller) as cmd:
        cmd.audit("flatten", "system", None)
        msg_id = cmd.announce(Flatten(by=caller.actor))
    return Accepted(message_id=msg_id)


@legs_router.post(
    "/{trade_id}/exit", response_model=ExitOut, status_code=status.HTTP_202_ACCEPTED,
    dependencies=IDEMPOTENT,
    summary="Ask the strategy to exit one open leg", responses=problem_responses(400, 404, 409),
)
def exit_leg(
    ctx: ContextDep,
    caller: Trader,
    trade_id: Annotated[str, Path(min_length=1, max_length=90)],
) -> ExitOut:
    with command(ctx, caller) as cmd:
        trade = cmd.session.get(Trade, trade_id)
        if trade is None:
            raise ApiProblem(404, f"no leg {trade_id!r}")
        if trade.status != "OPEN":
            raise ApiProblem(409, f"leg {trade_id!r} is {trade.status}, not OPEN")
        cmd.audit("leg.exit", "trade", trade_id, before={"status": trade.status})
        msg_id = cmd.announce(
            ExitRequested(ladder_id=trade.ladder_id, leg=trade.position_number, by=caller.actor)
        )
    return ExitOut(message_id=msg_id, trade_id=trade_id, ladder_id=trade.ladder_id,
                   leg=trade.position_number)

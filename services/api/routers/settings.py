"""Run-time settings (admin): GET /settings, PUT /settings/{section}, GET /settings/history.

A section's current values are the process's settings overlaid by the newest stored row of that
section. A PUT body holds some fields of one section; the merged section is validated by its
model in ``shared.config`` (422 on, e.g., a stop percentage outside (0, 50] or a capital of 0, or
an unknown field), stored whole as a new row (the history), audited, and announced as
ParamsChanged carrying the changed fields only, as text (a tuple as "9,21,50,200"). Stored values
are the section's JSON form (exact decimals as strings)."""

from __future__ import annotations

import copy
import typing
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any, Literal

from annotated_types import MaxLen, MinLen
from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, ValidationError, create_model, field_serializer
from pydantic.fields import FieldInfo
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.config import (
    ApiSettings,
    ExecutionSettings,
    MarketdataSettings,
    RiskSettings,
    Settings,
    StrategySettings,
)
from shared.contracts.messages import ParamsChanged
from shared.store.models import SettingsVersion

from ..commands import command
from ..context import ApiContext, Caller
from ..deps import Admin, ContextDep, SessionDep
from ..paging import Limit, Offset, fetch_page
from ..problems import ApiProblem
from ..schemas import Page
from ..schemas_control import SettingsChange

router = APIRouter(prefix="/settings", tags=["settings"])

SECTIONS: dict[str, type[BaseModel]] = {
    "strategy": StrategySettings,
    "risk": RiskSettings,
    "execution": ExecutionSettings,
    "marketdata": MarketdataSettings,
    "api": ApiSettings,
}
SectionName = Literal["strategy", "risk", "execution", "marketdata", "api"]


def _decimal_fields(model: type[BaseModel]) -> list[str]:
    return [name for name, f in model.model_fields.items() if f.annotation is Decimal]


def _as_list(info: FieldInfo) -> tuple[Any, FieldInfo] | None:
    """A fixed-length tuple field as a list of that length (FastAPI writes tuples into OpenAPI
    as ``items: [...]``, which OpenAPI 3.1 does not allow)."""
    args = typing.get_args(info.annotation)
    if typing.get_origin(info.annotation) is not tuple or not args or Ellipsis in args:
        return None
    replaced = copy.copy(info)
    replaced.metadata = [*info.metadata, MinLen(len(args)), MaxLen(len(args))]
    return list[args[0]], replaced  # type: ignore[valid-type]


def _output_model(model: type[BaseModel]) -> type[BaseModel]:
    """The section's model, with decimals written as JSON numbers."""
    fields = {
        name: listed for name, info in model.model_fields.items()
        if (listed := _as_list(info)) is not None
    }
    validators: dict[str, Any] = {}
    decimals = _decimal_fields(model)
    if decimals:
        def as_number(self: BaseModel, value: Decimal) -> float:
            return float(value)

        validators["as_number"] = field_serializer(*decimals, when_used="json")(as_number)
    out: type[BaseModel] = create_model(  # type: ignore[call-overload]
        f"{model.__name__}Out", __base__=model, __module__=__name__, **fields
    )
    if validators:
        return type(out.__name__, (out,), {"__module__": __name__, **validators})
    return out


OUT_MODELS = {name: _output_model(model) for name, model in SECTIONS.items()}


def _patch_model(name: str, model: type[BaseModel]) -> type[BaseModel]:
    """The section's model with every field optional: same types and bounds, default None
    (defaults are not validated, so an absent field is simply not changed)."""
    fields: dict[str, Any] = {}
    for field, info in model.model_fields.items():
        annotation, source = _as_list(info) or (info.annotation, info)
        optional = copy.copy(source)
        optional.default = None
        optional.default_factory = None
        fields[field] = (annotation, optional)
    patch: type[BaseModel] = create_model(  # type: ignore[call-overload]
        f"{model.__name__}Patch", __base__=model, **fields
    )
    patch.__doc__ = f"Fields of the {name} section to change; the others keep their values."
    return patch


AllSettings = create_model(  # type: ignore[call-overload]
    "AllSettings",
    __config__=ConfigDict(frozen=True, extra="forbid"),
    **{name: (out, ...) for name, out in OUT_MODELS.items()},
)


def current_section(session: Session, settings: Settings, name: str) -> BaseModel:
    model = SECTIONS[name]
    row = session.scalars(
        select(SettingsVersion)
        .where(SettingsVersion.section == name)
        .order_by(SettingsVersion.id.desc())
        .limit(1)
    ).first()
    base = getattr(settings, name).model_dump()
    if row is not None:
        base.update(row.values)
    return OUT_MODELS[name].model_validate(model.model_validate(base).model_dump())


def _as_text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return "" if value is None else str(value)


def _put(ctx: ApiContext, caller: Caller, name: str, patch: BaseModel) -> BaseModel:
    changes = patch.model_dump(exclude_unset=True)
    if not changes:
        raise ApiProblem(422, "the body changes nothing: give at least one field")
    model = SECTIONS[name]
    with command(ctx, caller) as cmd:
        before = current_section(cmd.session, ctx.settings, name)
        merged = {**before.model_dump(), **changes}
        try:
            section = model.model_validate(merged)
        except ValidationError as exc:
            errors = [
                {"loc": ["body", *map(str, e["loc"])], "msg": e["msg"], "type": e["type"]}
                for e in exc.errors()
            ]
            raise ApiProblem(422, f"invalid {name} settings", title="Unprocessable Content",
                             errors=errors) from exc
        values = section.model_dump(mode="json")
        previous = model.model_validate(before.model_dump()).model_dump(mode="json")
        changed = {k: v for k, v in values.items() if previous.get(k) != v}
        if changed:  # putting the current values again is a no-op: no row, no message
            cmd.session.add(SettingsVersion(section=name, values=values, changed_by=caller.actor))
            cmd.audit("settings.put", "settings", name, before=previous, after=values)
            cmd.announce(ParamsChanged(
                section=name, values={k: _as_text(v) for k, v in changed.items()},
                by=caller.actor,
            ))
    return OUT_MODELS[name].model_validate(section.model_dump())


@router.get("", response_model=AllSettings, summary="Current settings of every section")
def get_settings(ctx: ContextDep, session: SessionDep, caller: Admin) -> BaseModel:
    return AllSettings(**{name: current_section(session, ctx.settings, name) for name in SECTIONS})


@router.get("/history", response_model=Page[SettingsChange], summary="Changes, newest first")
def settings_history(
    session: SessionDep,
    caller: Admin,
    section: Annotated[SectionName | None, Query()] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[SettingsChange]:
    query = select(SettingsVersion).order_by(SettingsVersion.id.desc())
    if section:
        query = query.where(SettingsVersion.section == section)
    rows, total = fetch_page(session, query, limit, offset)
    items = [
        SettingsChange(id=r.id, section=r.section, values=r.values, changed_by=r.changed_by,
                       changed_at=r.changed_at)
        for r in rows
    ]
    return Page[SettingsChange](items=items, total=total, limit=limit, offset=offset)


def _put_endpoint(name: str, patch_model: type[BaseModel]) -> Callable[..., BaseModel]:
    def put_section(ctx: ContextDep, caller: Admin, body: BaseModel) -> BaseModel:
        return _put(ctx, caller, name, body)

    # The body's model differs per section; annotations are strings here (PEP 563), so set it.
    put_section.__annotations__["body"] = patch_model
    put_section.__name__ = f"put_{name}_settings"
    return put_section


for _name, _model in SECTIONS.items():
    router.add_api_route(
        f"/{_name}",
        _put_endpoint(_name, _patch_model(_name, _model)),
        methods=["PUT"],
        response_model=OUT_MODELS[_name],
        summary=f"Change {_name} settings",
    )

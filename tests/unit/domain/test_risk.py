from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.domain.risk import (
    OrderCheck,
    RejectReason,
    RiskLimits,
    RiskState,
    check_gtt_create,
    check_order,
    count_order,
)

LIMITS = RiskLimits()
OK_ORDER = OrderCheck("INFY", "NSE:INFY:1", qty=2, price_paise=150_000, tick=5,
                      freeze_qty=100_000, lower_circuit=135_000, upper_circuit=165_000)


def test_defaults_from_settings() -> None:
    from shared.config import RiskSettings

    assert RiskLimits.from_settings(RiskSettings()) == LIMITS
    assert LIMITS.max_capital_paise == 24_000_000 and LIMITS.max_active_gtts == 250


def test_clean_order_passes() -> None:
    assert check_order(OK_ORDER, RiskState(), LIMITS) is None


@pytest.mark.parametrize(
    ("order", "state", "limits", "reason"),
    [
        ({}, {"halted": True, "halt_reason": "kill"}, {}, RejectReason.HALTED),
        ({}, {"market_open": False}, {}, RejectReason.MARKET_CLOSED),
        ({"qty": 0}, {}, {}, RejectReason.QTY_ZERO),
        ({"qty": 6, "price_paise": 100}, {}, {"max_qty_per_order": 5}, RejectReason.QTY_TOO_LARGE),
        ({"qty": 6, "price_paise": 100, "freeze_qty": 5}, {}, {}, RejectReason.FREEZE_QTY),
        ({"qty": 7}, {}, {}, RejectReason.ORDER_VALUE),  # 7 x 1500 > 10,000
        ({"price_paise": 165_005}, {}, {}, RejectReason.CIRCUIT),
        ({"price_paise": 134_995}, {}, {}, RejectReason.CIRCUIT),
        ({"price_paise": 150_003}, {}, {}, RejectReason.OFF_TICK),
        ({}, {"open_legs": 90}, {}, RejectReason.MAX_OPEN_LEGS),
        ({}, {"deployed_paise": 24_000_000 - 299_999}, {}, RejectReason.MAX_CAPITAL),
        ({}, {"realised_loss_today_paise": 500_000}, {}, RejectReason.DAILY_LOSS),
        ({}, {"active_gtts": 250}, {}, RejectReason.GTT_CAP),
        ({}, {"live_order_keys": {"NSE:INFY:1"}}, {}, RejectReason.DUPLICATE_LIVE_ORDER),
    ],
)
def test_each_guard(order: dict, state: dict, limits: dict, reason: RejectReason) -> None:
    got = check_order(replace(OK_ORDER, **order), RiskState(**state), replace(LIMITS, **limits))
    assert got == reason


def test_limits_are_inclusive() -> None:
    assert check_order(OK_ORDER, RiskState(open_legs=89), LIMITS) is None
    assert check_order(OK_ORDER, RiskState(deployed_paise=24_000_000 - 300_000), LIMITS) is None
    assert check_order(OK_ORDER, RiskState(realised_loss_today_paise=499_999), LIMITS) is None
    assert check_order(replace(OK_ORDER, price_paise=165_000), RiskState(), LIMITS) is None
    # order value exactly at the limit passes (6 x 1,500.00 = 9,000.00)
    assert check_order(replace(OK_ORDER, qty=6), RiskState(),
                       replace(LIMITS, max_order_value_paise=900_000)) is None


@settings(max_examples=200, deadline=None)
@given(
    halted=st.booleans(),
    market_open=st.booleans(),
    open_legs=st.integers(0, 1000),
    deployed=st.integers(0, 10**9),
    loss=st.integers(0, 10**8),
    gtts=st.integers(0, 1000),
    qty=st.integers(1, 10**6),
    price=st.integers(1, 10**7),
    dup=st.booleans(),
)
def test_exits_never_blocked(
    halted: bool, market_open: bool, open_legs: int, deployed: int, loss: int, gtts: int,
    qty: int, price: int, dup: bool,
) -> None:
    state = RiskState(halted=halted, market_open=market_open, open_legs=open_legs,
                      deployed_paise=deployed, realised_loss_today_paise=loss, active_gtts=gtts,
                      live_order_keys={"NSE:INFY:1"} if dup else set())
    exit_order = OrderCheck("INFY", "NSE:INFY:1", qty=qty, price_paise=price, tick=5,
                            freeze_qty=1, lower_circuit=price + 5, upper_circuit=price - 5,
                            adds_risk=False)
    assert check_order(exit_order, state, LIMITS) is None


def test_gtt_create_only_capped() -> None:
    assert check_gtt_create(RiskState(halted=True, market_open=False), LIMITS) is None
    assert check_gtt_create(RiskState(active_gtts=249), LIMITS) is None
    assert check_gtt_create(RiskState(active_gtts=250), LIMITS) == RejectReason.GTT_CAP


@settings(max_examples=60, deadline=None)
@given(
    orders=st.lists(st.tuples(st.integers(1, 6), st.integers(1, 40)), min_size=1, max_size=30),
    max_legs=st.integers(0, 10),
    capital=st.integers(0, 2_000_000),
)
def test_orders_checked_together_never_exceed_the_limits(
    orders: list[tuple[int, int]], max_legs: int, capital: int
) -> None:
    """Orders checked one after another against one picture, each passed one counted: the legs
    and capital that passed stay within the limits, and a leg passes at most once."""
    limits = replace(LIMITS, max_open_legs=max_legs, max_capital_paise=capital)
    state = RiskState()
    legs = 0
    deployed = 0
    for qty, leg in orders:
        check = replace(OK_ORDER, qty=qty, leg_key=f"NSE:INFY:{leg}")
        if check_order(check, state, limits) is None:
            count_order(check, state)
            legs += 1
            deployed += qty * check.price_paise
    assert legs <= max_legs and deployed <= capital
    assert (state.open_legs, state.deployed_paise) == (legs, deployed)
    assert len(state.live_order_keys) == legs

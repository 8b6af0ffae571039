"""Golden tests of each rule on hand-built bars (DESIGN §3, §9); prices in paise.

Every scenario starts from the same warm-up, whose last bar (2024-06-04 10:00 IST unless said)
signals P1 at its close of ₹1,000.00: capital ₹10,000 → qty 10, stop ₹975.00 (−2.5%), target
₹1,050.00 (+5%). The bars after it are written as (open, high, low, close); their ticks run
open, low, high, close when close >= open, else open, high, low, close.
"""

from __future__ import annotations

from bt_helpers import ist, rows, run, series

SIG = ist(4, 10, 0)
T_SIG, T1, T2 = "2024-06-04 10:00:00", "2024-06-04 10:15:00", "2024-06-04 10:30:00"


def test_p1_target_hit() -> None:
    result = run(series("INFY", SIG, [(100_000, 105_100, 99_900, 104_000)]))
    assert rows(result) == [("INFY", 1, T_SIG, 100_000, 10, T1, 105_000, "target", 50_000)]
    leg = result.legs[0]
    assert (leg.initial_stop, leg.target, leg.entry_ms) == (97_500, 105_000, ist(4, 10, 15))


def test_p1_stopped() -> None:
    # the high (₹1,001.00) would trail to ₹975.95, less than 0.1% above ₹975.00: no step
    result = run(series("INFY", SIG, [(100_000, 100_100, 97_000, 98_000)]))
    assert rows(result) == [("INFY", 1, T_SIG, 100_000, 10, T1, 97_500, "stop", -25_000)]
    assert result.stop_raises == 0


def test_p2_and_p3_added_then_closed_at_the_end_of_data() -> None:
    bars = [(100_000, 100_300, 100_000, 100_300),  # high +0.3% > 0.25%: P2 at ₹1,003.00
            (100_300, 102_000, 100_200, 101_500)]  # high: mean(2%, 1.69%) > 1%: P3 at ₹1,020
    result = run(series("INFY", SIG, bars))
    assert rows(result) == [
        ("INFY", 1, T_SIG, 100_000, 10, T2, 101_500, "end", 15_000),
        ("INFY", 2, T1, 100_300, 9, T2, 101_500, "end", 10_800),
        ("INFY", 3, T2, 102_000, 9, T2, 101_500, "end", -4_500),
    ]
    p1, p2, p3 = result.legs
    assert (p1.initial_stop, p1.stop_loss, p1.highest_price) == (97_500, 99_450, 102_000)
    assert (p2.initial_stop, p2.stop_loss, p2.target) == (97_790, 99_450, None)
    assert (p3.initial_stop, p3.stop_loss, p3.target) == (96_900, 96_900, None)
    assert [leg.leg for leg in result.legs] == [1, 2, 3]


def test_trailing_stop_raised_then_hit() -> None:
    bars = [(100_000, 104_000, 100_000, 104_000),  # highest ₹1,040 → stop ₹1,014.00
            (103_000, 103_200, 101_000, 101_200)]  # the low crosses it: exit at the stop
    result = run(series("INFY", SIG, bars), strategy={"p2_trigger_pct": 40})
    assert rows(result) == [("INFY", 1, T_SIG, 100_000, 10, T2, 101_400, "stop", 14_000)]
    assert result.stop_raises == 1
    assert (result.legs[0].initial_stop, result.legs[0].stop_loss) == (97_500, 101_400)


def test_gap_through_the_stop_exits_at_the_open() -> None:
    result = run(series("INFY", SIG, [(96_000, 96_500, 95_000, 95_500)]))
    assert rows(result) == [("INFY", 1, T_SIG, 100_000, 10, T1, 96_000, "stop", -40_000)]


def test_gap_through_the_target_exits_at_the_open() -> None:
    result = run(series("INFY", SIG, [(106_000, 107_000, 105_500, 106_500)]))
    assert rows(result) == [("INFY", 1, T_SIG, 100_000, 10, T1, 106_000, "target", 60_000)]


def test_no_entry_from_a_bar_that_closes_at_or_after_the_cutoff() -> None:
    late = series("INFY", ist(4, 14, 45), [(100_000, 100_000, 100_000, 100_000)])
    assert run(late).legs == []  # the 14:45 bar closes at 15:00, the cut-off itself
    later = series("INFY", ist(4, 15, 0), [(100_000, 100_000, 100_000, 100_000)])
    assert run(later).legs == []


def test_entry_before_the_cutoff_but_no_p2_after_it() -> None:
    bars = [(100_000, 100_000, 100_000, 100_000),  # 14:45: nothing moves
            (100_000, 101_000, 100_000, 100_500)]  # 15:00: +1% would add P2, but it is late
    result = run(series("INFY", ist(4, 14, 30), bars))
    assert rows(result) == [("INFY", 1, "2024-06-04 14:30:00", 100_000, 10,
                             "2024-06-04 15:00:00", 100_500, "end", 5_000)]
    assert result.legs[0].stop_loss == 98_475  # trailing still runs after the cut-off


def test_caps_apply_across_symbols_in_alphabetical_order() -> None:
    bars = [(100_000, 100_300, 100_000, 100_300)]
    result = run(series("BBB", SIG, bars), series("AAA", SIG, bars), risk={"max_open_legs": 1})
    assert [(r.symbol, r.leg) for r in result.legs] == [("AAA", 1)]
    assert result.rejections == {"max_open_legs": 2}  # BBB's P1, then AAA's P2


def test_plain_bar_lists_are_accepted_with_ist_stamps() -> None:
    from bt_helpers import RULES, params

    from backtest.core import run_backtest
    from shared.domain.risk import RiskLimits

    bars = series("INFY", SIG, [(100_000, 105_100, 99_900, 104_000)]).bars
    result = run_backtest({"INFY": bars}, params(), RiskLimits(), RULES)
    assert rows(result) == [("INFY", 1, "2024-06-04T10:00:00+05:30", 100_000, 10,
                             "2024-06-04T10:15:00+05:30", 105_000, "target", 50_000)]

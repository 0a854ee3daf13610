"""Intervals: Student t against textbook tables, Wilson for 0/1 outcomes, a stable streamed variance."""

import math
import statistics

import numpy as np
import pytest

from bindexp.stats import RunningMoments, mean_interval, sample_interval, t_quantile, wilson_bounds

# t(0.975, df) from a printed table (e.g. Montgomery & Runger, Appendix Table V)
TEXTBOOK_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 9: 2.262, 29: 2.045, 120: 1.980}


@pytest.mark.parametrize("df, expected", sorted(TEXTBOOK_T975.items()))
def test_t_quantile_matches_the_textbook_table(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=5e-4)
    assert t_quantile(0.025, df) == pytest.approx(-expected, abs=5e-4)


def test_t_quantile_other_levels_and_the_normal_limit():
    assert t_quantile(0.995, 1) == pytest.approx(63.657, abs=5e-3)  # 99% two-sided, df 1
    assert t_quantile(0.95, 10) == pytest.approx(1.812, abs=5e-4)
    assert t_quantile(0.975, 100000) == pytest.approx(1.95996, abs=1e-4)


def test_interval_over_two_seeds_uses_t_not_1_96():
    mean, low, high = mean_interval([0.4, 0.6])
    sd = statistics.stdev([0.4, 0.6])
    assert mean == pytest.approx(0.5)
    assert high - mean == pytest.approx(12.706 * sd / math.sqrt(2), rel=1e-4)  # not 1.96 * ...
    assert math.isnan(mean_interval([0.4])[1])


def test_running_variance_is_stable_where_sums_of_squares_fail():
    rng = np.random.default_rng(0)
    data = 1e6 + rng.normal(0.0, 1e-3, size=(2000, 4))  # large mean, tiny spread
    expected = data.var(axis=0, ddof=1)
    naive = ((data**2).sum(0) - len(data) * data.mean(0) ** 2) / (len(data) - 1)
    assert not np.allclose(naive, expected, rtol=1e-2)  # the naive formula really breaks here

    streamed = RunningMoments(4)
    for row in data:
        streamed.add(row)
    assert np.allclose(streamed.variance, expected, rtol=1e-6)
    assert np.allclose(streamed.mean, data.mean(0), rtol=0, atol=1e-7)  # spread is 1e-3

    left, right = RunningMoments(4), RunningMoments(4)  # Chan's parallel merge
    for row in data[:700]:
        left.add(row)
    for row in data[700:]:
        right.add(row)
    left.merge(right)
    assert np.allclose(left.variance, expected, rtol=1e-6)

    mean, low, high = streamed.interval()
    half = t_quantile(0.975, len(data) - 1) * np.sqrt(expected / len(data))
    assert np.allclose(high - mean, half, rtol=1e-6) and np.allclose(mean - low, half, rtol=1e-6)


def test_running_moments_skip_nan_cells_like_numpy():
    data = np.array([[1.0, np.nan, 3.0], [2.0, 5.0, np.nan], [4.0, 7.0, np.nan]])
    streamed = RunningMoments(3)
    for row in data:
        streamed.add(row)
    assert streamed.count.tolist() == [3, 2, 1]
    assert np.allclose(streamed.mean, np.nanmean(data, axis=0))
    assert np.allclose(streamed.variance[:2], np.nanvar(data[:, :2], axis=0, ddof=1)) and np.isnan(streamed.variance[2])
    mean, low, high, count = sample_interval(data)
    assert np.allclose(mean, np.nanmean(data, axis=0)) and count.tolist() == [3, 2, 1]
    assert np.allclose(low[:2], streamed.interval()[1][:2]) and np.isnan(low[2])


def _wilson_by_hand(k, n, z=1.959963984540054):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_wilson_bounds_textbook():
    low, high = wilson_bounds(np.array([19, 20, 0]), np.array([20, 20, 0]))
    assert low[0] == pytest.approx(0.7639, abs=1e-4) and high[0] == pytest.approx(0.9911, abs=1e-4)
    assert low[1] == pytest.approx(_wilson_by_hand(20, 20)[0]) and high[1] == 1.0
    assert np.isnan(low[2]) and np.isnan(high[2])


def test_iia_cells_of_a_patch_grid_get_wilson_intervals():
    """IIA is 0/1 per pair: 19 of 20 must not give [0.852, 1.048]; 20 of 20 must not be zero-width."""
    from bindexp.interventions.results.grid import GridAccumulator

    accumulator = GridAccumulator(("layer", "role"), {"layer": [0], "role": ["a", "b"]}, ["iia", "logit_diff"])
    for pair in range(20):
        accumulator.add({"iia": np.array([[1.0 if pair else 0.0, 1.0]]),
                         "logit_diff": np.array([[float(pair), 1.0 + pair % 2]])})
    grid = accumulator.grid()
    for column, successes in ((0, 19), (1, 20)):
        low, high = _wilson_by_hand(successes, 20)
        assert grid.ci_low["iia"][0, column] == pytest.approx(low)
        assert grid.ci_high["iia"][0, column] == pytest.approx(min(1.0, high))
    assert grid.ci_high["iia"][0, 1] - grid.ci_low["iia"][0, 1] > 0.1
    values = np.arange(20.0)
    half = t_quantile(0.975, 19) * values.std(ddof=1) / math.sqrt(20)
    assert grid.ci_high["logit_diff"][0, 0] == pytest.approx(values.mean() + half)


@pytest.mark.parametrize("metric", ["iia", "flip", "top1_answer", "accuracy"])
def test_every_zero_one_grid_metric_gets_wilson_intervals(metric):
    """0 of 20 is [0, 0.161] (z^2 / (n + z^2)), not the zero-width [0, 0] a t interval gives."""
    from bindexp.interventions.results.grid import GridAccumulator

    accumulator = GridAccumulator(("layer", "role"), {"layer": [0], "role": ["a"]}, [metric])
    for _ in range(20):
        accumulator.add({metric: np.array([[0.0]])})
    grid = accumulator.grid()
    assert grid.ci_low[metric][0, 0] == 0.0
    assert grid.ci_high[metric][0, 0] == pytest.approx(1.959964**2 / (20 + 1.959964**2), abs=1e-6)


def test_iia_means_over_runs_get_t_intervals_not_wilson():
    """Averaging runs' IIA (fractions, not 0/1 outcomes) through the same accumulator: t over runs."""
    from bindexp.interventions.results.grid import GridAccumulator

    accumulator = GridAccumulator(("layer", "role"), {"layer": [0], "role": ["a"]}, ["iia"])
    for run_mean in (0.5, 0.7):
        accumulator.add({"iia": np.array([[run_mean]])})
    grid = accumulator.grid()
    half = 12.706 * statistics.stdev([0.5, 0.7]) / math.sqrt(2)
    assert grid.ci_high["iia"][0, 0] == pytest.approx(0.6 + half, abs=1e-3)
    assert grid.ci_low["iia"][0, 0] == pytest.approx(0.6 - half, abs=1e-3)


# ---------------------------------------------------------------- decisions by intervals


def test_the_interval_rule_decides_from_the_wilson_bounds():
    from bindexp.stats import CARRIES, DOES_NOT, UNDETERMINED, decide

    assert decide(5, 10, 0.5) == UNDETERMINED  # the point estimate sits on the threshold: one pair decides nothing
    assert decide(20, 20, 0.5) == CARRIES  # Wilson [0.839, 1]
    assert decide(0, 20, 0.5) == DOES_NOT  # Wilson [0, 0.161]
    assert decide(4, 10, 0.5) == UNDETERMINED and decide(6, 10, 0.5) == UNDETERMINED  # 0.4 vs 0.6: one pair apart
    assert decide(9, 10, 0.5) == CARRIES and decide(1, 10, 0.5) == DOES_NOT
    assert decide(0, 0, 0.5) == UNDETERMINED


def test_decisions_elementwise_match_decide():
    from bindexp.stats import decide, decisions

    cases = [(5, 10), (20, 20), (0, 20), (14, 20), (13, 20), (0, 0)]
    bounds = [wilson_bounds(s, n) for s, n in cases]
    low, high = np.array([b[0] for b in bounds], dtype=float), np.array([b[1] for b in bounds], dtype=float)
    assert list(decisions(low, high, 0.5)) == [decide(s, n, 0.5) for s, n in cases]


def test_clip_to_range_flags_what_it_moved():
    from bindexp.stats import clip_to_range

    low, high, moved = clip_to_range([-7e-37, 0.2, np.nan, -448.0], [0.4, 1.3, np.nan, 12.0], (0.0, 1.0))
    assert list(low[:2]) == [0.0, 0.2] and list(high[:2]) == [0.4, 1.0] and np.isnan(low[2])
    assert list(moved) == [True, True, False, True]
    low, high, moved = clip_to_range([-448.0], [900.0], (1.0, None))  # a rank: at least 1, no upper bound known
    assert low[0] == 1.0 and high[0] == 900.0 and moved[0]


def test_display_rounds_to_three_significant_digits():
    from bindexp.stats import display

    assert display(0.049999999999999996) == 0.05
    assert display(972.4567) == 972.0 and display(0.00012345) == 0.000123
    assert display({"iia": 1 / 3, "n": 20, "where": "root_value@0-9", "ci": [0.1234567, None]}) == {
        "iia": 0.333, "n": 20, "where": "root_value@0-9", "ci": [0.123, None]}
    assert display(True) is True and math.isnan(display(float("nan")))

"""The closed gap against hand-worked numbers: per-setting gaps, the gate, regret in pooled std, the
paired bootstrap (settings and seeds resampled together), differences between policies, typed errors."""

from __future__ import annotations

import numpy as np
import pytest

from mixagent.errors import ConfigError
from mixagent.study.closed_gap import SettingScores, closed_gap_table, pooled_seed_std, single_best_fixed

NOISE = np.array([0.0, 0.1, -0.1])  # every row's seed pattern: seed variance 0.01, pooled std 0.1


def _setting(name, sbf, oracle, **rows):
    scores = {"sbf": sbf + NOISE, "oracle": oracle + NOISE, **{k: v + NOISE for k, v in rows.items()}}
    return SettingScores(name, (0, 1, 2), scores, oracle="oracle", sbf="sbf")


SETTINGS = [
    _setting("a", 0.0, 1.0, agent=0.5, ptc=0.2),   # gap 10 std: counts; the agent closes half of it
    _setting("b", 0.0, 0.2, agent=0.3, ptc=0.1),   # gap 2 std: below the gate of 3
    _setting("c", 0.0, 2.0, agent=2.0, ptc=0.8),   # the agent closes all of it
]


def test_closed_gap_against_hand_worked_numbers():
    table = closed_gap_table(SETTINGS, ["agent", "ptc"], n_boot=2000, differences=[("agent", "ptc")])
    rows = {r["setting"]: r for r in table["settings"]}
    assert rows["a"]["pooled_std"] == pytest.approx(0.1) and rows["a"]["oracle_gap_std"] == pytest.approx(10)
    assert [rows[s]["gated"] for s in "abc"] == [True, False, True] and (table["gated"], table["total"]) == (2, 3)
    assert rows["a"]["policies"]["agent"]["closed_gap"] == pytest.approx(0.5)
    assert rows["a"]["policies"]["agent"]["regret_std"] == pytest.approx(5.0)
    assert rows["b"]["policies"]["agent"]["closed_gap"] == pytest.approx(1.5)  # reported, not counted
    agent, ptc = table["policies"]["agent"], table["policies"]["ptc"]
    assert agent["mean_closed_gap"] == pytest.approx(0.75) and agent["n"] == 2  # mean of 0.5 and 1.0
    assert ptc["mean_closed_gap"] == pytest.approx(0.3)  # mean of 0.2 and 0.4
    assert agent["win_rate"] == 1.0 and agent["worst"] == {"setting": "a", "closed_gap": pytest.approx(0.5)}
    assert agent["mean_regret_std"] == pytest.approx((5.0 + 0.0) / 2)
    # seeds resampled together leave each setting's gap as it is (every row shares the seed pattern), so the
    # interval comes from resampling the two settings: means 0.5, 0.75, 1.0
    assert agent["ci95"] == pytest.approx([0.5, 1.0])
    (diff,) = table["differences"]
    assert diff["mean"] == pytest.approx(0.45) and diff["ci95"] == pytest.approx([0.3, 0.6])


def test_seed_noise_widens_the_interval_and_the_bootstrap_is_seeded():
    rng = np.random.default_rng(1)
    noisy = [SettingScores(f"s{i}", (0, 1, 2, 3), {"sbf": rng.normal(0, 0.1, 4), "oracle": rng.normal(1, 0.1, 4),
                                                   "agent": rng.normal(0.5, 0.1, 4)}, "oracle", "sbf")
             for i in range(6)]
    a = closed_gap_table(noisy, ["agent"], n_boot=500, seed=3)
    assert a == closed_gap_table(noisy, ["agent"], n_boot=500, seed=3)
    lo, hi = a["policies"]["agent"]["ci95"]
    assert lo < a["policies"]["agent"]["mean_closed_gap"] < hi and 0.2 < lo and hi < 0.8


def test_the_gate_is_pooled_over_the_noise_rows_and_never_over_the_judged_policy():
    scores = {"sbf": NOISE, "oracle": 1 + NOISE, "agent": 0.5 + 10 * NOISE}  # a wild policy: seed std 1.0
    plain = SettingScores("s", (0, 1, 2), scores, "oracle", "sbf")
    named = SettingScores("s", (0, 1, 2), scores, "oracle", "sbf", noise_rows=("oracle", "sbf"))
    for s in (plain, named):
        (row,) = closed_gap_table([s], ["agent"], n_boot=50)["settings"]
        assert row["pooled_std"] == pytest.approx(0.1) and row["gated"]  # 10 std, whatever the agent's noise
    with pytest.raises(ConfigError, match=r"noise rows \['uniform'\] have no scores"):
        closed_gap_table([SettingScores("s", (0, 1, 2), scores, "oracle", "sbf", noise_rows=("uniform",))],
                         ["agent"], n_boot=10)


def test_harm_is_measured_on_every_setting_gated_or_not():
    settings = [_setting("a", 0.0, 1.0, agent=0.5), _setting("b", 0.0, 0.2, agent=-0.3)]  # b: under the gate
    table = closed_gap_table(settings, ["agent"], n_boot=50)
    rows = {r["setting"]: r for r in table["settings"]}
    assert rows["a"]["policies"]["agent"]["harm_std"] == pytest.approx(-5.0)
    assert rows["b"]["policies"]["agent"]["harm_std"] == pytest.approx(3.0)  # 0.3 below SBF at std 0.1
    agent = table["policies"]["agent"]
    assert agent["max_harm_std"] == pytest.approx(3.0) and agent["harmful"] == ["b"] and agent["n"] == 1


def test_resamples_without_an_oracle_margin_are_discarded_and_counted():
    # the oracle margin on 3 seeds drawn with replacement is 3 - 1.5 k for k draws of seed 2: none when k >= 2,
    # which happens with probability 3 (1/3)^2 (2/3) + (1/3)^3 = 7/27
    s = SettingScores("s", (0, 1, 2), {"sbf": [0.0, 0.0, 0.0], "oracle": [1.0, 1.0, -0.5],
                                       "agent": [0.5, 0.5, 0.0]}, "oracle", "sbf")
    table = closed_gap_table([s], ["agent"], gate=0.1, n_boot=2000, seed=0)
    assert table["discarded"] / 2000 == pytest.approx(7 / 27, abs=0.03)
    lo, hi = table["policies"]["agent"]["ci95"]
    assert 0 <= lo <= hi <= 1


def test_no_setting_through_the_gate_gives_no_mean():
    table = closed_gap_table([SETTINGS[1]], ["agent"], n_boot=10)
    assert table["gated"] == 0 and table["policies"]["agent"]["mean_closed_gap"] is None


def test_pooled_std_and_the_single_best_fixed_rule():
    assert pooled_seed_std({"x": [1.0, 2.0, 3.0], "y": [0.0, 0.0, 0.0]}) == pytest.approx(np.sqrt(0.5))
    # the same runs under two names (a 2-domain space's uniform is its replay 0.5) count once, not twice
    same = {"uniform": [1.0, 2.0, 3.0], "replay:0.5": [1.0, 2.0, 3.0], "y": [0.0, 0.0, 0.0]}
    assert pooled_seed_std(same) == pytest.approx(np.sqrt(0.5))
    other = np.var([1, 2, 3.5], ddof=1)
    assert pooled_seed_std({**same, "replay:0.5": [1.0, 2.0, 3.5]}) == pytest.approx(np.sqrt((1 + 0 + other) / 3))
    means = {"uniform": {"s1": 1.0, "s2": 0.2}, "replay:0.5": {"s1": 0.7, "s2": 0.7}}
    assert single_best_fixed(means) == "replay:0.5"  # 0.7 beats 0.6 on average
    with pytest.raises(ConfigError, match="same .* training settings"):
        single_best_fixed({"uniform": {"s1": 1.0}, "natural": {"s2": 1.0}})


@pytest.mark.parametrize("scores, message", [
    ({"sbf": [0, 1, 2], "oracle": [0, 1]}, "one finite score per seed"),
    ({"sbf": [0, 1, 2], "oracle": [0, 1, float("nan")]}, "one finite score per seed"),
    ({"sbf": [0, 1, 2]}, r"row 'oracle' \(oracle or sbf\) has no scores"),
])
def test_bad_scores_are_refused(scores, message):
    with pytest.raises(ConfigError, match=message):
        closed_gap_table([SettingScores("s", (0, 1, 2), scores, "oracle", "sbf")], [], n_boot=10)
    with pytest.raises(ConfigError, match="policy row 'missing' missing"):
        closed_gap_table([SETTINGS[0]], ["agent", "missing"], n_boot=10)

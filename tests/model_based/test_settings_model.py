"""The world model across settings: its data layout rebuilds the next evaluation in spaces of different size,
the network is permutation-equivariant, the artifact round-trips and refuses what it cannot read, and the job
measures every setting with a model fitted without it (on the committed suite collection)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mixagent.agent.dataset import load_trajectories
from mixagent.errors import ConfigError, CorruptArtifactError, SchemaVersionError, WorldModelError
from mixagent.model_based import settings_job
from mixagent.model_based.settings_job import SettingsModelJobConfig, grid_rows, run_settings_model_job
from mixagent.model_based.settings_model import (
    SettingsModelConfig,
    _next_eval,
    fit_settings_model,
    load_settings_model,
    rollout,
    rollout_final,
    settings_data,
)
from mixagent.paths import REPO_ROOT
from mixagent.trajectories.suite import expand_runs

SUITE = "trajectories/reference/suite-v1"
AUDITS = REPO_ROOT / "audits/settings/math-cpt-v1/tuning/math-cpt-v1"
TINY = SettingsModelConfig(members=2, hidden=8, epochs=3, batch_size=64)


@pytest.fixture(scope="module")
def runs():
    """Three committed settings: two in the 10-domain math space, one in the 8-domain natural space."""
    names, _ = expand_runs([SUITE])
    tsets = {n: load_trajectories([REPO_ROOT / n]) for n in names}
    ks = {n: t.space.k for n, t in tsets.items()}
    pick = [n for n in names if ks[n] == 10][:2] + [n for n in names if ks[n] == 8][:1]
    assert len(pick) == 3, f"the committed suite should hold both spaces: {ks}"
    return pick, [tsets[n] for n in pick]


@pytest.fixture(scope="module")
def data(runs):
    return settings_data(runs[1])


def test_layout_rebuilds_the_next_evaluation_in_any_space(runs, data):
    d, setting_runs = data
    assert d.dom.shape[1:] == (10, 6) and d.y_dom.shape[1] == 10 and d.run.shape[1] == 10 and d.y_run.shape[1] == 4
    for run in setting_runs:  # 76 distinct segments per setting (2 branching trees); padding only beyond K
        rows = d.setting == run.name
        assert rows.sum() == 76
        assert (d.valid[rows].sum(1) == run.space.k).all()
        assert (d.dom[rows][:, run.space.k:] == 0).all()
    tset = runs[1][2]
    run = setting_runs[2]
    traj = sorted(tset.trajectories, key=lambda rt: (rt[0], rt[1].id))[0][1]
    i = int(np.flatnonzero((d.setting == run.name) & (d.traj == f"{run.name}/{traj.id}") & (d.step == 2))[0])
    k = run.space.k
    after = _next_eval(run, traj.evals[1], d.y_dom[i, :k].astype(np.float64), d.y_run[i].astype(np.float64), 0)
    real = traj.evals[2]
    assert max(abs(after.bpb[n] - real.bpb[n]) for n in run.space.names) < 1e-5
    assert abs(after.scores["target"] - real.scores["target"]) < 1e-6
    assert abs(after.accuracy["source"] - real.accuracy["source"]) < 1e-6
    np.testing.assert_allclose(d.dom[i, :k, 2], k * np.asarray(traj.steps[2]["weights"]), atol=1e-5)  # next weights
    np.testing.assert_allclose(d.dom[i, :k, 1], k * np.asarray(traj.steps[1]["weights"]), atol=1e-5)  # last weights
    b = [np.array([e.bpb[n] for n in run.space.names]) for e in (traj.start, traj.evals[0], traj.evals[1])]
    np.testing.assert_allclose(d.dom[i, :k, 4], b[2] / b[0] - 1, atol=1e-5)  # the loss now, relative to the start
    np.testing.assert_allclose(d.dom[i, :k, 5], (b[2] - b[1]) / b[0], atol=1e-5)  # its change over the last step
    s0, s1, s2 = (e.scores["target"] for e in (traj.start, traj.evals[0], traj.evals[1]))
    assert d.run[i, 1] == pytest.approx((s2 - s0) / 0.1, abs=1e-4)  # target score since the start, over SCORE_SCALE
    assert d.run[i, 3] == pytest.approx((s2 - s1) / 0.1, abs=1e-4)  # and since the last step
    assert d.run[i, 4] == pytest.approx(2 / run.horizon) and d.run[i, 5] == pytest.approx(run.lrs[2])
    # the first segment: the weights before are the start's, nothing has changed yet
    j = int(np.flatnonzero((d.setting == run.name) & (d.traj == f"{run.name}/{traj.id}") & (d.step == 0))[0])
    np.testing.assert_allclose(d.dom[j, :k, 1], k * run.start_weights, atol=1e-5)
    assert not d.dom[j, :k, 4:].any() and not d.run[j, :4].any()


def test_fit_round_trip_equivariance_and_refusals(runs, data, tmp_path):
    d, setting_runs = data
    model = fit_settings_model(d, TINY)
    model.save(tmp_path / "m")
    loaded = load_settings_model(tmp_path / "m")
    batch = d.subset(np.arange(len(d)) < 9)
    for a, b in zip(model.predict(batch.dom, batch.target, batch.valid, batch.run),
                    loaded.predict(batch.dom, batch.target, batch.valid, batch.run)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # permuting one setting's domains permutes the per-domain predictions and leaves the run-level ones
    one = d.subset(d.setting == setting_runs[0].name)
    perm = np.random.default_rng(0).permutation(10)
    base = loaded.predict(one.dom, one.target, one.valid, one.run)
    moved = loaded.predict(one.dom[:, perm], one.target[:, perm], one.valid[:, perm], one.run)
    np.testing.assert_allclose(moved[0], base[0][:, perm], atol=1e-5)
    np.testing.assert_allclose(moved[2], base[2], atol=1e-5)
    assert loaded.meta["settings"] == sorted(r.name for r in setting_runs)
    # an 8-domain setting predicts the same alone (as a rollout feeds it) as padded to 10 in a batch
    eight = d.subset(d.setting == setting_runs[2].name)
    alone = loaded.predict(eight.dom[:, :8], eight.target[:, :8], eight.valid[:, :8], eight.run)
    padded = loaded.predict(eight.dom, eight.target, eight.valid, eight.run)
    np.testing.assert_allclose(alone[0], padded[0][:, :8], atol=1e-5)
    np.testing.assert_allclose(alone[2], padded[2], atol=1e-5)
    # a rollout from the start of a setting: one evaluation per segment, the schedule's length checked
    run = setting_runs[2]
    final = rollout_final(loaded, run, [run.natural] * run.horizon)
    assert final.tokens_seen == run.horizon * int(run.stated["segment_tokens"])
    assert set(final.bpb) == set(run.space.names)
    # a rollout builds its inputs as the data does: its first evaluation is the model's prediction on the data's
    # first-segment row of a trajectory that trained the same weights
    traj = sorted(runs[1][2].trajectories, key=lambda rt: (rt[0], rt[1].id))[0][1]
    evals = rollout(loaded, run, [np.asarray(s["weights"]) for s in traj.steps])
    row = d.subset((d.setting == run.name) & (d.traj == f"{run.name}/{traj.id}") & (d.step == 0))
    y_dom, _, y_run, _ = loaded.predict(row.dom[:, :8], row.target[:, :8], row.valid[:, :8], row.run)
    want = _next_eval(run, run.start, y_dom[0].astype(np.float64), y_run[0].astype(np.float64), 0)
    assert len(evals) == run.horizon
    assert max(abs(evals[0].bpb[n] - want.bpb[n]) for n in run.space.names) < 1e-6
    assert evals[0].scores["target"] == pytest.approx(want.scores["target"], abs=1e-7)
    with pytest.raises(WorldModelError, match="a schedule of 3 segments for a setting of 8"):
        rollout_final(loaded, run, [run.natural] * 3)
    # refusals: a tampered file, another kind, no artifact, a bad config
    raw = bytearray((tmp_path / "m/model.safetensors").read_bytes())
    raw[-1] ^= 1
    (tmp_path / "m/model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CorruptArtifactError, match="checksum"):
        load_settings_model(tmp_path / "m")
    meta = json.loads((tmp_path / "m/meta.json").read_text())
    (tmp_path / "m/meta.json").write_text(json.dumps({**meta, "kind": "mixagent.world_model"}))
    with pytest.raises(SchemaVersionError, match="refit it"):
        load_settings_model(tmp_path / "m")
    with pytest.raises(WorldModelError, match="not a world-model artifact"):
        load_settings_model(tmp_path / "none")
    with pytest.raises(ConfigError, match="members must be >= 1"):
        fit_settings_model(d, SettingsModelConfig(members=0))


def test_fit_is_reproducible(data):
    d, _ = data
    a = fit_settings_model(d, TINY).predict(d.dom[:5], d.target[:5], d.valid[:5], d.run[:5])
    b = fit_settings_model(d, TINY).predict(d.dom[:5], d.target[:5], d.valid[:5], d.run[:5])
    np.testing.assert_array_equal(a[0], b[0])
    c = fit_settings_model(d, SettingsModelConfig(members=2, hidden=8, epochs=3, batch_size=64, seed=1))
    assert not np.allclose(c.predict(d.dom[:5], d.target[:5], d.valid[:5], d.run[:5])[0], a[0])


def test_grid_rows_read_the_audit_of_the_same_runs(data):
    _, setting_runs = data
    found = {r.name: grid_rows(r, AUDITS, (100,)) for r in setting_runs}
    with_audit = [n for n, rows in found.items() if rows]
    assert with_audit, "the first committed suite settings are the oracle table's training settings"
    for name in with_audit:
        rows = found[name]
        assert len(rows) == 29 and {"natural", "uniform"} <= set(rows)
        assert all(np.isfinite(v) for v in rows.values())
    assert all(not grid_rows(r, AUDITS, (7,)) for r in setting_runs)  # no row of another seed


def test_job_measures_each_setting_with_a_model_fitted_without_it(tmp_path, monkeypatch):
    trained_on = []
    fit = settings_job.fit_settings_model

    def spy(d, cfg, progress=None):
        trained_on.append(set(np.unique(d.setting)))
        return fit(d, cfg, progress)

    monkeypatch.setattr(settings_job, "fit_settings_model", spy)
    names, _ = expand_runs([SUITE])
    cfg = SettingsModelJobConfig(data=tuple(names[:4]), out=str(tmp_path / "wm"), model=TINY, folds=2)
    report = run_settings_model_job(cfg, progress=False)
    rows = report["settings"]
    assert [r["setting"] for r in rows] == [n.rsplit("/", 1)[1] for n in names[:4]]
    assert len(trained_on) == 3 and trained_on[-1] == {r["setting"] for r in rows}  # 2 folds, then all
    for r in rows:
        assert r["setting"] not in trained_on[r["fold"]]
        assert r["transitions"] == 76
        rk = r.get("ranking")
        if rk:
            real = {p["key"]: p["real"] for p in rk["points"]}
            assert rk["rows"] == len(real) == 29 and rk["real_best"] == max(real, key=real.get)
            assert rk["regret"] == pytest.approx(max(real.values()) - real[rk["model_pick"]])
            six = "rho:" + ",".join(["0.6000"] * 8)
            assert rk["fixed_regret"]["replay:0.6"] == pytest.approx(max(real.values()) - real[six])
            assert set(rk["fixed_regret"]) == {"replay:0.6", "replay:0.7"}
    assert any("ranking" in r for r in rows)
    assert (tmp_path / "wm/report.md").read_text().count("\n| ") == 5  # header + 4 settings
    assert (tmp_path / "wm/ranks.png").stat().st_size > 0
    assert load_settings_model(tmp_path / "wm").meta["runs"] == names[:4]
    with pytest.raises(ConfigError, match="folds=5 needs at least that many settings"):
        run_settings_model_job(SettingsModelJobConfig(data=tuple(names[:4]), out=str(tmp_path / "x"), model=TINY,
                                                      folds=5), progress=False)
    with pytest.raises(ConfigError, match="folds must be an integer >= 2"):
        run_settings_model_job(SettingsModelJobConfig(folds=1), progress=False)

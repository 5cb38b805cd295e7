"""Collection across the settings of a suite: one ordinary run per drawn training run, the setting recorded
in its meta and in the suite index, each run's env the setting's spec; a resumed collection keeps what it
has and grows; another suite or seed is refused on resume; bad configs are typed errors."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

from mixagent.env.setting import load_suite
from mixagent.env.spec import load_spec
from mixagent.errors import ConfigError, ResumeMismatchError
from mixagent.paths import REPO_ROOT
from mixagent.rollout.tree import TreeConfig, spec_identity
from mixagent.trajectories import Run
from mixagent.trajectories.collector import CollectConfig, collect
from mixagent.trajectories.suite import collect_suite, expand_runs
from tests.study.test_oracle_table import SUITE as TINY_SUITE

SUITE = {**TINY_SUITE, "name": "tiny-collect",
         "axes": {"target_tokens": {"range": [2048, 65536]}, "lr": {"range": [0.001, 0.01]}, "lam": {"range": [0, 1]}},
         "train": {"target_tokens": [4096, 16384], "lr": [0.003], "lam": [0.2, 0.8]},
         "held_out": {"scarce": {"target_tokens": 2048}}}


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    from mixagent.env import references

    root = tmp_path_factory.mktemp("suite")
    path = root / "suite.yaml"
    path.write_text(yaml.safe_dump(SUITE, sort_keys=False))
    cfg = CollectConfig(run="across", suite=str(path), settings=1, trees=1, seed=3, tree=TreeConfig(branch_at=()),
                        launcher="inline", out_dir=str(root / "out"))
    patch = pytest.MonkeyPatch()
    patch.setattr(references, "COMMITTED_REFERENCE_DIR", root / "committed")  # not the repository's
    first = collect_suite(cfg, progress=False)
    grown = collect_suite(dataclasses.replace(cfg, settings=2), resume=True, progress=False)
    yield cfg, load_suite(path), first, grown
    patch.undo()


def test_one_run_per_setting_with_the_setting_recorded(collected):
    cfg, suite, first, grown = collected
    assert len(first) == 1 and len(grown) == 1  # growing to 2 settings collected only the new one
    settings = suite.distinct_runs(2, cfg.seed)
    assert len({s.run_hash() for s in settings}) == 2  # two distinct runs: the two target budgets
    index = json.loads((cfg.run_dir / "suite.json").read_text())
    assert index["training_hash"] == suite.training_hash() and [e["run_hash"] for e in index["settings"]] == \
        [s.run_hash() for s in settings]
    for k, setting in enumerate(settings):
        run = Run(cfg.run_dir / setting.run_hash())
        assert run.complete and len(run.entries) == 1
        assert run.meta["setting"]["setting"] == {**setting.to_json(), "lam": None}  # relabelled offline
        assert run.meta["setting"]["hidden"] == setting.hidden() and run.meta["setting"]["suite"] == "tiny-collect"
        spec = load_spec(REPO_ROOT / suite.env, setting.overrides(suite, keep_lam=True))
        assert run.meta["env"] == spec_identity(spec)  # the setting's own spec: its target budget
        assert spec.target_tokens == setting.target_tokens
        assert run.meta["seed"] == cfg.seed * 100_003 + k
        (traj,) = run.trajectories()
        assert len(traj.steps) == 4
        # the setting's reference extremes were committed as soon as its reference runs finished
        committed = json.loads((cfg.run_dir.parents[1] / "committed" / f"{spec.spec_hash()}.json").read_text())
        assert {k: committed[k] for k in ("best", "worst")} == {k: run.meta["proxy"]["reference"][k]
                                                                for k in ("best", "worst")}


def test_resume_is_bound_to_the_suite_and_seed(collected):
    cfg, _, _, _ = collected
    with pytest.raises(ResumeMismatchError, match="already holds a suite collection"):
        collect_suite(cfg, progress=False)
    with pytest.raises(ResumeMismatchError, match="cannot resume .* collected for"):
        collect_suite(dataclasses.replace(cfg, seed=4), resume=True, progress=False)
    with pytest.raises(ResumeMismatchError, match="cannot resume .* collected for"):
        collect_suite(dataclasses.replace(cfg, tree=TreeConfig(branch_at=(2,), factor=2)), resume=True,
                      progress=False)
    assert collect_suite(cfg, resume=True, progress=False) == []  # nothing left to do
    index = json.loads((cfg.run_dir / "suite.json").read_text())
    assert len(index["settings"]) == 2  # asking for 1 setting keeps the second one listed


def test_a_suite_collection_stands_for_its_finished_settings_and_trains_one_policy(collected, tmp_path):
    """``expand_runs`` lists a suite collection's finished settings (an unfinished one is left out and named),
    and per-domain BC over the suite directory clones every setting's runs at each lam."""
    import shutil

    from mixagent.agent.train_per_domain import PerDomainBCConfig, train_per_domain

    cfg, suite, _, _ = collected
    root = tmp_path / "copy"
    shutil.copytree(cfg.run_dir, root / "across")
    hashes = [s.run_hash() for s in suite.distinct_runs(2, cfg.seed)]
    runs, left = expand_runs(["across", "other/run"], root=root)
    assert runs == [f"across/{h}" for h in hashes] + ["other/run"] and left == []
    manifest = root / "across" / hashes[1] / "manifest.json"
    m = json.loads(manifest.read_text())
    m["trees_done"] = []  # the second setting's tree not finished
    manifest.write_text(json.dumps(m))
    assert expand_runs(["across"], root=root) == ([f"across/{hashes[0]}"], [f"across/{hashes[1]}"])
    assert expand_runs(["across"], root=root, partial=True)[0] == [f"across/{h}" for h in hashes]
    for h in hashes:
        m = json.loads((root / "across" / h / "manifest.json").read_text())
        m["trees_done"] = []
        (root / "across" / h / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ConfigError, match="none of its 2 settings is complete yet"):
        expand_runs(["across"], root=root)
    out = train_per_domain(PerDomainBCConfig(data=(str(cfg.run_dir),), steps=20, hidden=8, observation=2,
                                             lams=(0.2, 0.8), top_fraction=1.0), tmp_path / "bc", progress=False)
    meta = json.loads((out / "meta.json").read_text())
    assert [r["run"] for r in meta["training"]["runs"]] == [str(cfg.run_dir / h) for h in hashes]
    assert all(r["lams"] == [0.2, 0.8] and r["transitions"] == 2 * 4 for r in meta["training"]["runs"])


def test_bad_suite_configs(tmp_path):
    problems = CollectConfig(run="x", suite="configs/settings/math-cpt-v1.yaml").check()
    assert any("settings must be >= 1 with a suite" in p for p in problems)
    problems = CollectConfig(run="x", settings=3).check()
    assert any("settings needs suite" in p for p in problems)
    problems = CollectConfig(run="x", suite="configs/settings/missing.yaml", settings=1).check()
    assert any("suite: file 'configs/settings/missing.yaml' not found" in p for p in problems)
    with pytest.raises(ConfigError, match="collects one run per setting"):
        collect(CollectConfig(run="x", suite="configs/settings/math-cpt-v1.yaml", settings=1,
                              out_dir=str(tmp_path)))



def test_reward_overrides_join_every_setting_and_nothing_else_may(tmp_path):
    """A suite collection may add ``reward.*`` overrides (they change no run, only what its rewards are scaled
    by: e.g. ``reward.anchors``); every setting's spec gets them, and the collection's identity records them."""
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(SUITE, sort_keys=False))
    problems = CollectConfig(run="x", suite=str(path), settings=1, env_overrides=("steps=2",)).check()
    assert any("['steps=2'] do not apply with a suite" in p and "reward.*" in p for p in problems)
    cfg = CollectConfig(run="anchored", suite=str(path), settings=1, trees=1, seed=3, tree=TreeConfig(branch_at=()),
                        launcher="inline", out_dir=str(tmp_path / "out"), env_overrides=("reward.anchors=[uniform]",))
    assert cfg.check() == []
    collect_suite(cfg, progress=False)
    (setting,) = load_suite(path).distinct_runs(1, cfg.seed)
    run = Run(cfg.run_dir / setting.run_hash())
    assert run.meta["env"]["spec"]["reward"]["anchors"] == ["uniform"]
    assert json.loads((cfg.run_dir / "suite.json").read_text())["env_overrides"] == ["reward.anchors=[uniform]"]
    with pytest.raises(ResumeMismatchError, match="cannot resume .* collected for"):
        collect_suite(dataclasses.replace(cfg, env_overrides=()), resume=True, progress=False)


def test_a_setting_an_audit_ran_adopts_its_reference_runs_and_is_packed_when_done(tmp_path, monkeypatch):
    """``references_from``: a setting whose runs an oracle table audited commits the audit's extremes widened by
    its anchor runs under the setting's spec hash, and collects without running reference or anchor runs.
    ``pack_to``: the finished setting is packed there with the index; on a fresh machine (no working copy) it
    counts as collected, and the packed directory is a suite collection to train on."""
    from mixagent.env import references
    from mixagent.env.environment import MixingEnv
    from tests.env.test_cpt_knobs import write_audit

    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(SUITE, sort_keys=False))
    suite = load_suite(path)
    (setting,) = suite.distinct_runs(1, 3)
    pair = load_spec(REPO_ROOT / suite.env, setting.overrides(suite, keep_lam=False))
    env = MixingEnv(pair)
    write_audit(tmp_path / "audits" / pair.spec_hash(), pair, env, tmp_path / "cache", ("uniform",))
    spec = load_spec(REPO_ROOT / suite.env, [*setting.overrides(suite, keep_lam=True), "reward.anchors=[uniform]"])
    want = references.get_reference(spec, env.backend, env.space, root=tmp_path / "run")  # run, for comparison
    monkeypatch.setattr(references, "COMMITTED_REFERENCE_DIR", tmp_path / "committed")
    monkeypatch.setattr(references, "run_static", lambda *a: pytest.fail("a reference run ran"))
    cfg = CollectConfig(run="adopt", suite=str(path), settings=1, trees=1, seed=3, tree=TreeConfig(branch_at=()),
                        launcher="inline", out_dir=str(tmp_path / "out"), env_overrides=("reward.anchors=[uniform]",),
                        references_from=str(tmp_path / "audits"), pack_to=str(tmp_path / "packed"))
    assert cfg.check() == []
    collect_suite(cfg, progress=False)
    committed = json.loads((tmp_path / "committed" / f"{spec.spec_hash()}.json").read_text())
    for m in ("bpb", "score"):  # what running the reference and anchor runs gives
        assert committed["best"][m] == pytest.approx(want.best[m], rel=1e-9)
        assert committed["worst"][m] == pytest.approx(want.worst[m], rel=1e-9)
    run, packed = Run(cfg.run_dir / setting.run_hash()), Run(tmp_path / "packed" / setting.run_hash())
    assert run.complete and packed.packed and packed.complete and sorted(packed.entries) == sorted(run.entries)
    import shutil

    shutil.rmtree(cfg.run_dir)  # a fresh machine: only the packed (committed) data
    assert collect_suite(cfg, resume=True, progress=False) == []
    assert expand_runs([str(tmp_path / "packed")]) == ([f"{tmp_path / 'packed'}/{setting.run_hash()}"], [])
    with pytest.raises(ResumeMismatchError, match="cannot resume .*packed"):
        collect_suite(dataclasses.replace(cfg, seed=4, run="other"), resume=True, progress=False)
    from mixagent.trajectories.suite import _check_packed

    with pytest.raises(ResumeMismatchError, match="another collection's directory"):  # without its index
        _check_packed(tmp_path / "packed" / setting.run_hash(), dataclasses.replace(cfg, seed=7), setting)
    problems = CollectConfig(run="x", references_from=str(tmp_path / "nowhere"), pack_to="p").check()
    assert any("references_from needs suite" in p for p in problems) and any("not found" in p for p in problems)
    assert any("pack_to needs suite" in p for p in problems)

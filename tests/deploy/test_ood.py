"""The out-of-distribution guard: a learned policy's observation checked against its training range before each
decision (``ood: warn | clip | fallback``), the history and report counts, and the typed refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mixagent.config import load_config
from mixagent.deploy.job_config import DeployConfig
from mixagent.deploy.scheduler import MixingScheduler, SchedulerStateError
from mixagent.domains import Domain, DomainSpace, DomainWeights, action_to_weights
from mixagent.env.evaluation import EvalResult
from mixagent.env.observation import ObservationBuilder
from mixagent.errors import ConfigError
from mixagent.paths import CONFIGS_DIR
from mixagent.policies import UniformPolicy, load_policy
from mixagent.policies.guard import OODConfig
from mixagent.policies.per_domain import (
    DOMAIN_FEATURE_NAMES,
    RUN_FEATURE_NAMES,
    PerDomainNet,
    features,
    write_per_domain_artifact,
)
from mixagent.policies.registry import PolicyContext, build_policy

SPACE = DomainSpace("t3", [Domain("web", "source", []), Domain("books", "source", []), Domain("math", "target", [])])
NATURAL = DomainWeights(SPACE, np.array([0.5, 0.3, 0.2]))
WIDE = [-0.5, 0.5]  # every loss and score feature's training range here
RANGES = {"format": 1, "rows": 10,
          "domain": {f: {"weight": [0.0, 3.0], "initial": [0.0, 3.0], "loss_rel": WIDE, "loss_change": WIDE}
                     for f in ("source", "target")},
          "run": {"source_score": WIDE, "target_score": WIDE, "source_change": WIDE, "target_change": WIDE,
                  "progress": [0.0, 1.0], "lr": [1.0, 1.0]}}


def evaluation(target_gain: float = 0.0) -> EvalResult:
    """Per-domain loss 2.0 (in range); target score ``0.2 * (1 + target_gain)``: its relative change is the gain."""
    return EvalResult({n: 2.0 for n in SPACE.names}, {"source": 0.3, "target": 0.2 * (1 + target_gain)}, {})


@pytest.fixture()
def artifact(tmp_path):
    torch.manual_seed(0)
    return write_per_domain_artifact(tmp_path / "pd", PerDomainNet(16), {
        "action": {"temperature": 0.25, "floor": 0.0}, "training": {"feature_ranges": RANGES}})


@pytest.fixture()
def bare(tmp_path):
    """A per-domain artifact that records no feature ranges (trained before artifacts did)."""
    torch.manual_seed(0)
    return write_per_domain_artifact(tmp_path / "bare", PerDomainNet(16), {"action": {"temperature": 0.25,
                                                                                      "floor": 0.0}})


def replay(reset: bool = False) -> object:
    policy = build_policy("replay:0.5", PolicyContext(NATURAL.to_mapping()))
    if reset:
        policy.reset(SPACE)
    return policy


def scheduler(path, mode: str | None, fallback=None) -> MixingScheduler:
    ood = OODConfig(mode) if mode else None
    return MixingScheduler(load_policy(path), SPACE, NATURAL, ood=ood, ood_fallback=fallback or replay())


def observations(first: DomainWeights, gain: float) -> tuple[np.ndarray, np.ndarray]:
    """The two observations a scheduler builds for evaluations ``evaluation(0)`` then ``evaluation(gain)``, the
    second after moving to ``first``."""
    build, e0 = ObservationBuilder(SPACE), evaluation()
    return build(NATURAL.values, e0, e0, e0, 0.0), build(first.values, e0, e0, evaluation(gain), 0.5)


def test_an_observation_inside_the_range_passes_untouched(artifact):
    guarded, plain = scheduler(artifact, "fallback"), scheduler(artifact, None)
    ref = load_policy(artifact)
    ref.reset(SPACE)
    obs0, _ = observations(NATURAL, 0.0)
    assert ref.out_of_range(obs0) == []
    for s in (guarded, plain):
        w = s.step(evaluation(), 0.0)
        np.testing.assert_allclose(w.values, ref.act(obs0).values, rtol=0, atol=1e-12)
        ref.initial = None  # the same first observation again for the other scheduler
    assert guarded.history[0]["ood"] is None and guarded.ood_summary()["affected"] == 0


def test_tolerance_is_a_share_of_the_range_width(artifact):
    policy = load_policy(artifact)
    policy.reset(SPACE)
    obs = ObservationBuilder(SPACE)(NATURAL.values, evaluation(), evaluation(), evaluation(0.52), 0.5)
    assert policy.out_of_range(obs, tolerance=0.05) == []  # 0.52 is 2% of the width [-0.5, 0.5] beyond it
    found = policy.out_of_range(obs, tolerance=0.01)
    assert [f.feature for f in found] == ["target_score", "target_change"]
    assert found[0].value == pytest.approx(0.52, abs=1e-6) and found[0].excess == pytest.approx(0.02, abs=1e-6)
    assert found[0].relative == pytest.approx(0.02, abs=1e-6) and policy.initial is None  # a check keeps no state


@pytest.mark.parametrize("mode", ["warn", "clip", "fallback"])
def test_a_feature_beyond_the_range_is_handled_by_the_mode(artifact, mode):
    s = scheduler(artifact, mode)
    first = s.step(evaluation(), 0.0)
    second = s.step(evaluation(2.0), 0.5)  # target score +200% of its start: training never passed +50%
    obs0, obs1 = observations(first, 2.0)
    ref = load_policy(artifact)
    ref.reset(SPACE)
    ref.act(obs0)  # the run's initial weights, as the scheduler's policy saw them
    own = ref.act(obs1).values
    # the policy on the features clipped into the range, computed here from the features themselves
    dom, run = features(obs1.astype(np.float64), ref.is_target, obs0[:3].astype(np.float64))
    run[RUN_FEATURE_NAMES.index("target_score")] = 0.5
    run[RUN_FEATURE_NAMES.index("target_change")] = 0.5
    with torch.inference_mode():
        a = ref.net(torch.from_numpy(dom)[None], torch.from_numpy(ref.is_target)[None],
                    torch.from_numpy(run)[None])[0].numpy().astype(np.float64)
    clipped = action_to_weights(SPACE, a, 0.25, 0.0).values
    assert np.abs(clipped - own).max() > 1e-3  # clipping changes the decision here
    expected = {"warn": own, "clip": clipped, "fallback": replay(reset=True).act(obs1).values}[mode]
    np.testing.assert_allclose(second.values, expected, rtol=0, atol=1e-6)
    entry = s.history[1]["ood"]
    assert entry["action"] == mode and [f["feature"] for f in entry["features"]] == ["target_score", "target_change"]
    assert entry["features"][0] | {"value": round(entry["features"][0]["value"], 4)} == {
        "feature": "target_score", "value": 2.0, "lo": -0.5, "hi": 0.5, "excess": 1.5, "relative": 1.5}
    assert s.history[0]["ood"] is None and s.history[1]["fallback"] is None
    summary = s.ood_summary()
    assert (summary["decisions"], summary["affected"], summary["checked"]) == (2, 1, True)
    assert summary["by_action"][mode]["decisions"] == 1
    assert summary["by_action"][mode]["features"]["target_score"]["excess"] == 1.5


class Counting:
    """A fallback policy that counts its decisions (its running state)."""

    def reset(self, space):
        self.space, self.calls = space, 0

    def act(self, obs):
        self.calls += 1
        return DomainWeights(self.space, np.array([0.1, 0.1, 0.8]))


def test_the_fallback_policy_is_stepped_at_every_update_and_resumes(artifact):
    counting = Counting()
    s = scheduler(artifact, "fallback", counting)
    for gain in (0.0, 0.3, 0.6):  # +60% is beyond [-0.5, 0.5] and its 5% tolerance
        s.step(evaluation(gain), 0.3)
    assert counting.calls == 3 and [h["ood"] is not None for h in s.history] == [False, False, True]
    np.testing.assert_allclose(s.history[2]["proposal"], [0.1, 0.1, 0.8])
    assert not np.allclose(s.history[1]["proposal"], [0.1, 0.1, 0.8])
    state = json.loads(json.dumps(s.state_dict()))
    assert state["fingerprint"]["ood"] == {"mode": "fallback", "fallback": "replay:0.5", "tolerance": 0.05}
    with pytest.raises(SchedulerStateError, match="'ood'"):  # a run resumed under another guard is refused
        scheduler(artifact, "clip").load_state_dict(state)
    old = {**state, "fingerprint": {k: v for k, v in state["fingerprint"].items() if k != "ood"}}
    scheduler(artifact, "warn").load_state_dict(old)  # a state from before the guard resumes under warn
    with pytest.raises(SchedulerStateError, match="'ood'"):
        scheduler(artifact, "fallback").load_state_dict(old)


def test_the_report_counts_the_affected_decisions(artifact, tmp_path):
    from mixagent.deploy.report import write_report

    s = scheduler(artifact, "fallback")
    for gain in (0.0, 2.0, 3.0):
        s.step(evaluation(gain), 0.3)
    report = {"name": "t", "policy": str(artifact), "model": {"name": "m", "parameters": 1}, "steps": 3,
              "domains": list(SPACE.names), "fields": list(SPACE.fields), "mapping": None, "history": s.history,
              "start": evaluation().to_json(), "final": evaluation(3.0).to_json(), "device": "cpu", "dtype": "fp32",
              "ood": s.ood_summary()}
    write_report(tmp_path, report)
    on_disk = json.loads((tmp_path / "report.json").read_text())["ood"]
    assert (on_disk["affected"], on_disk["by_action"]["fallback"]["decisions"]) == (2, 2)
    row = on_disk["by_action"]["fallback"]["features"]["target_score"]
    assert (row["decisions"], row["furthest"], row["excess"]) == (2, 3.0, 2.5)
    md = (tmp_path / "report.md").read_text()
    assert "`ood: fallback`, fallback `replay:0.5`, tolerance 5% of each range): 2 of 3 decisions" in md
    assert "| fallback (2 decisions) | target_score | 2 | [-0.5, +0.5] | +3 | 2.5 (2.5 widths) |" in md


def test_baselines_are_never_checked():
    s = MixingScheduler(UniformPolicy(), SPACE, NATURAL, ood=OODConfig("clip"))
    s.step(evaluation(), 0.0)
    s.step(evaluation(5.0), 0.5)
    assert [h["ood"] for h in s.history] == [None, None]
    summary = s.ood_summary()
    assert not summary["checked"] and "not a learned artifact" in summary["reason"]


@pytest.mark.parametrize("mode", ["clip", "fallback"])
def test_clip_and_fallback_refuse_an_artifact_without_ranges(bare, mode):
    with pytest.raises(ConfigError) as err:
        scheduler(bare, mode)
    text = str(err.value)
    assert err.value.where == "policy.ood" and str(bare) in text
    assert f"mixagent feature-ranges --artifact {bare}" in text and "policy.ood: warn" in text


def test_warn_acts_unchecked_on_an_artifact_without_ranges(bare, caplog):
    s = scheduler(bare, "warn")
    assert "records no feature ranges" in caplog.text
    s.step(evaluation(), 0.0)
    s.step(evaluation(5.0), 0.5)
    assert [h["ood"] for h in s.history] == [None, None] and not s.ood_summary()["checked"]


def test_fallback_needs_a_fallback_policy_that_is_not_learned(artifact):
    for bad in (None, load_policy(artifact)):
        with pytest.raises(ConfigError, match="needs a fallback policy built from ood_fallback") as err:
            MixingScheduler(load_policy(artifact), SPACE, NATURAL, ood=OODConfig(), ood_fallback=bad)
        assert err.value.where == "policy.ood_fallback"


def test_the_job_refuses_an_artifact_without_ranges_before_the_model_loads(bare, tmp_path):
    from mixagent.deploy.job import run_deploy

    cfg = load_config(DeployConfig, CONFIGS_DIR / "deploy/user-jsonl.yaml",
                      [f"trainer.output_dir={tmp_path / 'run'}", "trainer.max_steps=4", f"policy.spec={bare}"])
    with pytest.raises(ConfigError, match="records none .*mixagent feature-ranges"):
        run_deploy(cfg, progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override,match", [
    ("policy.ood=fallbak", r"policy.ood must be one of warn, clip, fallback, got 'fallbak' \(did you mean 'fallback'"),
    ("policy.ood_fallback=doremi", "policy.ood_fallback 'doremi': doremi needs preparation runs.*replay:0.5"),
    ("policy.ood_fallback=aioli", "policy.ood_fallback 'aioli': aioli learns from probe trainings"),
    ("policy.ood_fallback=checkpoints/agents/math-cpt-v1", "names a policy artifact: a learned fallback"),
    ("policy.ood_fallback=replay:2", "policy.ood_fallback: 'replay:2' needs a rho in"),
    ("policy.ood_tolerance=-1", "policy.ood_tolerance must be a finite share"),
])
def test_bad_ood_settings_are_typed_config_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(DeployConfig, CONFIGS_DIR / "deploy/user-jsonl.yaml", [override])


def test_an_unknown_fallback_lists_what_a_fallback_may_be_and_no_artifact():
    with pytest.raises(ConfigError, match="did you mean 'uniform'") as err:
        load_config(DeployConfig, CONFIGS_DIR / "deploy/user-jsonl.yaml", ["policy.ood_fallback=unifrom"])
    assert "artifact" not in str(err.value)


def test_the_guard_fields_keep_older_run_identities():
    from mixagent.config import to_dict

    default = load_config(DeployConfig, CONFIGS_DIR / "deploy/user-jsonl.yaml")
    assert not {"ood", "ood_fallback", "ood_tolerance"} & set(to_dict(default.policy))
    assert to_dict(load_config(DeployConfig, CONFIGS_DIR / "deploy/user-jsonl.yaml",
                               ["policy.ood=clip"]).policy)["ood"] == "clip"


def test_a_dense_artifact_checks_and_clips_each_observation_entry(tmp_path):
    from mixagent.env.observation import observation_names
    from mixagent.policies.artifact import random_artifact

    path = random_artifact(tmp_path / "dense", SPACE)
    meta = json.loads((path / "meta.json").read_text())
    names = observation_names(SPACE.names)
    table = {n: ([0.0, 1.0] if n.startswith("weight") or n == "progress" else WIDE) for n in names}
    meta["training"] = {"feature_ranges": {"format": 1, "rows": 10, "observation": table}}
    (path / "meta.json").write_text(json.dumps(meta))
    policy = load_policy(path)
    policy.reset(SPACE)
    _, obs = observations(NATURAL, 2.0)
    assert [f.feature for f in policy.out_of_range(obs)] == ["target_score", "target_change"]
    clipped = obs.copy()
    clipped[3 * 3 + 1] = clipped[3 * 3 + 3] = 0.5
    np.testing.assert_allclose(policy.act_clipped(obs).values, policy.act(clipped).values, rtol=0, atol=1e-12)
    del table["progress"]
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(Exception, match=r"lacks features \['progress'\]"):
        load_policy(path)


def test_feature_names_cover_the_feature_layout():
    assert len(DOMAIN_FEATURE_NAMES) == 5 and len(RUN_FEATURE_NAMES) == 6

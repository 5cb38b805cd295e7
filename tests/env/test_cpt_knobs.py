"""Environment v1's knobs: WSD learning rate, sub-domains by passage id, scarce target data, a base that saw
some target data, the solution benchmark, normalised rewards with cached reference runs, the LR in the
observation. Every test runs the real pieces on the tiny v1 spec (``envs/tiny-cpt.yaml``)."""

import json
import math

import numpy as np
import pytest

from mixagent.config import load_config, to_dict
from mixagent.data.build import read_split
from mixagent.data.domain_data import DomainData
from mixagent.domains import Domain, DomainSpace, replay_weights
from mixagent.env.base_model import BaseModelConfig, get_base_model
from mixagent.env.environment import MixingEnv
from mixagent.env.evaluation import EvalResult
from mixagent.env.proxy import OptimConfig, lr_at
from mixagent.env.references import get_reference, reference_path
from mixagent.env.rewards import Reference, balanced_score
from mixagent.env.spec import load_spec
from mixagent.errors import ConfigError, UsageError
from mixagent.paths import CONFIGS_DIR, ENVS_DIR
from mixagent.rollout.seeds import episode_seed_of


@pytest.fixture(scope="module")
def spec():
    return load_spec(ENVS_DIR / "tiny-cpt.yaml")


@pytest.fixture(scope="module")
def env(spec):
    return MixingEnv(spec)


def test_wsd_warms_up_holds_then_decays_linearly():
    cfg = OptimConfig(lr=1.0, schedule="wsd", warmup_fraction=0.1, decay_fraction=0.25, min_lr_ratio=0.0)
    lrs = [lr_at(i, 100, cfg) for i in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == 1.0  # 10 warm-up steps
    assert all(x == 1.0 for x in lrs[10:75])  # stable
    np.testing.assert_allclose(lrs[75:], [1 - (i + 1) / 25 for i in range(25)])  # linear to 0 at the last step
    assert load_spec(ENVS_DIR / "math-natural.yaml").optim.schedule == "cosine"  # v0 keeps its schedule
    with pytest.raises(ConfigError, match="warmup_fraction \\+ decay_fraction"):
        load_config(OptimConfig, None, ["schedule=wsd", "warmup_fraction=0.5", "decay_fraction=0.6"])
    with pytest.raises(ConfigError, match="schedule must be one of"):
        load_config(OptimConfig, None, ["schedule=cosin"])


def test_mixagent_threads_caps_the_proxy_threads(monkeypatch):
    from mixagent.env.proxy import torch_threads

    monkeypatch.delenv("MIXAGENT_THREADS", raising=False)
    assert torch_threads(2) == 2
    monkeypatch.setenv("MIXAGENT_THREADS", "1")
    assert torch_threads(2) == 1
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("MIXAGENT_THREADS", bad)
        with pytest.raises(ConfigError, match="(?s)MIXAGENT_THREADS.*positive integer"):
            torch_threads(2)


def test_added_knobs_at_their_defaults_keep_old_hashes():
    assert "schedule" not in to_dict(OptimConfig()) and to_dict(OptimConfig(schedule="wsd"))["schedule"] == "wsd"
    base = load_config(BaseModelConfig, CONFIGS_DIR / "base_model/default.yaml")
    assert "target_share" not in to_dict(base)
    v0 = load_spec(ENVS_DIR / "math-natural.yaml").mdp_dict()
    assert not {"target_tokens", "observe_lr", "reference_seeds"} & set(v0)
    assert load_spec(ENVS_DIR / "math-natural.yaml").spec_hash() == "e76ce34196fc0b8a"  # v0's frozen hash


def test_subdomains_by_passage_id_partition_the_corpus(spec, env):
    space = env.space
    gold, sol = space.index("math-gold"), space.index("math-solutions")
    ids = [p["id"] for p in read_split("math", "train")]
    n_gold = sum(1 for i in ids if i.startswith("C_") or "-ref#" in i)
    data = env.backend.data
    tok = env.backend.tokenizer
    eos = tok.eos_token_id
    assert int((data.train[gold] == eos).sum()) == n_gold  # one EOS per passage
    assert int((data.train[gold] == eos).sum() + (data.train[sol] == eos).sum()) == len(ids)
    base = get_base_model(spec.base_config())
    bad = DomainSpace("bad", [Domain("w", "source", ["wiki"]), Domain("m", "target", ["math"], match="^no-such-id")])
    with pytest.raises(ConfigError, match="no training passage"):
        DomainData(bad, base.tokenizer, base.tokenizer_hash)
    with pytest.raises(ConfigError, match="not a regular expression"):
        load_config(Domain, None, ["name=m", "field=target", "corpora=[math]", "match=(unclosed"])


def test_target_cap_keeps_a_fixed_subset_of_whole_windows(spec, env):
    backend, space = env.backend, env.space
    length = backend.model_config.seq_len + 1
    target = space.field_mask("target")
    capped = backend.train_streams
    assert sum(len(capped[d]) for d in np.flatnonzero(target)) <= spec.target_tokens
    shares = backend.natural[target] / backend.natural[target].sum()
    for d, share in zip(np.flatnonzero(target), shares):  # each keeps its share, to within one window
        assert len(capped[d]) > spec.target_tokens * share - length
    for d in np.flatnonzero(target):
        windows = {backend.data.train[d][i * length:(i + 1) * length].tobytes()
                   for i in range(len(backend.data.train[d]) // length)}
        assert all(capped[d][i * length:(i + 1) * length].tobytes() in windows for i in range(len(capped[d]) // length))
    for d in np.flatnonzero(~target):
        assert capped[d] is backend.data.train[d]  # the source field is not capped
    again = backend.data.capped_train(target, spec.target_tokens, length)
    assert all(np.array_equal(a, b) for a, b in zip(capped, again))  # the same subset every time
    with pytest.raises(ConfigError, match="raise target_tokens"):
        backend.data.capped_train(target, 10, length)


def test_base_with_a_target_share_has_seen_the_target(spec):
    plain = get_base_model(load_config(BaseModelConfig, CONFIGS_DIR / "base_model/tiny.yaml"))
    prior = get_base_model(spec.base_config())
    assert prior.meta["target_share"] == 0.05 and prior.meta["target_corpora"] == ["math"]
    assert plain.path != prior.path
    with pytest.raises(ConfigError, match="target_share > 0 needs target_corpora"):
        load_config(BaseModelConfig, None, ["target_share=0.1"])
    with pytest.raises(ConfigError, match="both as source"):
        load_config(BaseModelConfig, None, ["target_share=0.1", "target_corpora=[wiki]"])


def test_solution_benchmark_score_is_two_to_minus_bits_per_byte(env):
    start = env.reset(seed=0)[1]["eval"]
    ll, nbytes = env.backend.evaluator.last_items["target"]
    bpb = -ll.sum() / math.log(2) / nbytes.sum()
    assert start["scores"]["target"] == pytest.approx(2 ** -bpb, rel=1e-9)
    assert 0 < start["scores"]["target"] < 1 and len(ll) == len(env.backend.evaluator.items["target"])
    # the bytes are the UTF-8 bytes of each gold solution's kept tokens (its first seq_len - 16; a character
    # cut at the end decodes to one replacement character, hence the slack of 3 bytes)
    tok = env.backend.tokenizer
    seq_len = env.backend.model_config.seq_len
    for item, n in zip(env.backend.evaluator.items["target"], nbytes):
        ids = tok(item.choices[0], add_special_tokens=False)["input_ids"][: seq_len - 16]
        assert abs(n - len(tok.decode(ids).encode("utf-8"))) <= 3 and n < len(item.choices[0].encode("utf-8"))


def test_normalised_reward_uses_cached_reference_runs(spec, env):
    ref = env.reference
    assert ref.spec_hash == spec.spec_hash() and reference_path(spec.spec_hash()).exists()
    # source-only is the source field's best and the target field's worst
    assert ref.best["bpb"]["source"] < ref.worst["bpb"]["source"]
    assert ref.best["bpb"]["target"] < ref.worst["bpb"]["target"]
    # a source-only episode scores s_source ~ 1 and s_target ~ 0 on the reference seed
    backend = env.backend
    seed = spec.reference_seeds[0]
    backend.reset(seed)
    w = replay_weights(env.space, backend.natural, 1.0)
    for t in range(spec.steps):
        backend.train(w, t)
    final = backend.evaluate()
    assert ref.normalise("bpb", "source", final.field_bpb(env.space, "source")) == pytest.approx(1.0, abs=1e-9)
    assert ref.normalise("bpb", "target", final.field_bpb(env.space, "target")) == pytest.approx(0.0, abs=1e-9)
    # the return telescopes to B_T - B_0 and info carries B_t
    obs, info = env.reset(seed=1)
    b0, total, done = info["balanced_score"], 0.0, False
    while not done:
        obs, r, done, _, info = env.step(np.zeros(env.space.k, np.float32))
        total += r
    assert total == pytest.approx(info["balanced_score"] - b0, abs=1e-12)
    assert get_reference(spec, backend, env.space) == ref  # loaded, not rerun


def test_reference_runs_for_another_spec_are_refused(spec, env, tmp_path):
    path = reference_path(spec.spec_hash(), tmp_path)
    path.parent.mkdir(parents=True)
    d = json.loads(reference_path(spec.spec_hash()).read_text())
    path.write_text(json.dumps({**d, "spec_hash": "0123456789abcdef"}))
    with pytest.raises(ConfigError, match="cached for spec hash '0123456789abcdef'"):
        get_reference(spec, env.backend, env.space, root=tmp_path)


def test_an_audits_stored_reference_is_adopted_on_a_fresh_machine(spec, env, tmp_path, monkeypatch):
    # an audit committed the extremes its rows were scored with; an empty cache adopts them (no run), and
    # the cache then serves every env of that spec (the comparisons that score beside the audit)
    stored = tmp_path / "audit" / "reference.json"
    stored.parent.mkdir()
    shifted = Reference({"bpb": {"source": 2.25, "target": 3.5}, "score": {"source": 0.5, "target": 0.25}},
                        {"bpb": {"source": 4.5, "target": 5.5}, "score": {"source": 0.125, "target": 0.0625}},
                        spec.spec_hash(), (7,))
    stored.write_text(json.dumps(shifted.to_json()))
    monkeypatch.setattr("mixagent.env.references.run_static", lambda *a: pytest.fail("reference runs re-ran"))
    cache = tmp_path / "cache"
    assert get_reference(spec, env.backend, env.space, root=cache, stored=stored) == shifted
    stored.unlink()
    assert get_reference(spec, env.backend, env.space, root=cache) == shifted
    # the audit's record wins over a local cache that differs (its committed rows were scored with it)
    stored.write_text(json.dumps({**shifted.to_json(), "best": {**shifted.best, "bpb": {"source": 2.0,
                                                                                         "target": 3.5}}}))
    assert get_reference(spec, env.backend, env.space, root=cache, stored=stored).best["bpb"]["source"] == 2.0
    assert get_reference(spec, env.backend, env.space, root=cache).best["bpb"]["source"] == 2.0
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**shifted.to_json(), "spec_hash": "0123456789abcdef"}))
    with pytest.raises(ConfigError, match="stored for spec hash '0123456789abcdef'"):
        get_reference(spec, env.backend, env.space, root=tmp_path / "empty", stored=other)


def test_widening_recorded_extremes_equals_extremes_over_every_run(env):
    # the oracle table rescores a pair's results on an anchored scale from the pair's recorded extremes
    from mixagent.env.references import extremes, widened

    rng = np.random.default_rng(0)

    def run():
        bpb = {n: float(rng.uniform(1.5, 4.0)) for n in env.space.names}
        return EvalResult(bpb, {f: float(rng.uniform(0, 1)) for f in ("source", "target")},
                          {f: float(rng.uniform(0, 1)) for f in ("source", "target")})

    runs = {name: [run(), run()] for name in ("source_only", "target_only", "uniform", "natural")}
    pair = {k: runs[k] for k in ("source_only", "target_only")}
    best, worst = extremes(pair, env.space)
    full_best, full_worst = extremes(runs, env.space, ("natural", "uniform"))
    got = widened(Reference(best, worst, "h", (1,)), {a: runs[a] for a in ("natural", "uniform")}, env.space)
    for m in ("bpb", "score"):
        assert got.best[m] == pytest.approx(full_best[m]) and got.worst[m] == pytest.approx(full_worst[m])
    assert got.spec_hash == "h" and widened(Reference(best, worst), {}, env.space) == Reference(best, worst)


def test_a_pair_that_cannot_scale_is_cached_and_refused_again_without_running(spec, env, tmp_path, monkeypatch):
    # with very scarce target data target-only ends worse on the target field than source-only: the pair is
    # refused (typed), and the refusal comes from the cache next time (the oracle table then takes anchors)
    def run(backend, weights, steps, seed):
        source_only = weights[env.space.field_mask("source")].sum() > 0.5
        bpb = {n: (2.0 if env.space.fields[i] == "source" else 3.0) if source_only else
               (4.0 if env.space.fields[i] == "source" else 3.5) for i, n in enumerate(env.space.names)}
        scores = {"source": 0.5, "target": 0.3} if source_only else {"source": 0.2, "target": 0.25}
        return EvalResult(bpb, scores, scores)

    monkeypatch.setattr("mixagent.env.references.run_static", run)
    with pytest.raises(ConfigError, match="target field's bpb is inverted"):
        get_reference(spec, env.backend, env.space, root=tmp_path)
    assert reference_path(spec.spec_hash(), tmp_path).is_file()
    monkeypatch.setattr("mixagent.env.references.run_static", lambda *a: pytest.fail("reference runs re-ran"))
    with pytest.raises(ConfigError, match="target field's bpb is inverted"):
        get_reference(spec, env.backend, env.space, root=tmp_path)


def test_zero_range_and_missing_reference_are_typed_errors(env):
    same = {"bpb": {"source": 2.0, "target": 3.0}, "score": {"source": 0.5, "target": 0.2}}
    with pytest.raises(ConfigError, match="zero range"):
        Reference(same, same)
    worse = {"bpb": {"source": 3.0, "target": 4.0}, "score": {"source": 0.5, "target": 0.2}}
    inverted = Reference(worse, {"bpb": {"source": 2.0, "target": 5.0}, "score": {"source": 0.4, "target": 0.1}})
    with pytest.raises(ConfigError, match="the source field's bpb is inverted"):
        inverted.normalise("bpb", "source", 2.5)  # only the inverted measure is refused
    assert inverted.problems("score") == [] and inverted.normalise("score", "source", 0.45) == pytest.approx(0.5)
    # a noisy benchmark score inverted beside usable bits per byte: bpb rewards still work
    noisy = Reference({"bpb": {"source": 2.0, "target": 4.0}, "score": {"source": 0.3, "target": 0.2}},
                      {"bpb": {"source": 3.0, "target": 5.0}, "score": {"source": 0.4, "target": 0.1}})
    assert "the source field's score is inverted" in noisy.problems("score")[0]
    assert noisy.normalise("bpb", "target", 4.5) == pytest.approx(0.5)
    ev = EvalResult({n: 2.0 for n in env.space.names}, {"source": 0.5, "target": 0.2}, {"source": 0.5, "target": 0.2})
    with pytest.raises(UsageError, match="needs reference runs"):
        balanced_score("normalised_bpb", 0.5, ev, ev, env.space)
    ref = Reference({"bpb": {"source": 1.0, "target": 1.0}, "score": {"source": 1.0, "target": 1.0}},
                    {"bpb": {"source": 3.0, "target": 5.0}, "score": {"source": 0.0, "target": 0.0}})
    # s_source = (3 - 2) / 2 = 0.5, s_target = (5 - 2) / 4 = 0.75
    assert balanced_score("normalised_bpb", 0.5, ev, ev, env.space, ref) == pytest.approx(0.625)
    assert balanced_score("normalised_bpb_min", 0.5, ev, ev, env.space, ref) == pytest.approx(0.5)
    assert balanced_score("normalised_score", 1.0, ev, ev, env.space, ref) == pytest.approx(0.2)


def test_observation_carries_the_learning_rate(spec, env):
    obs, info = env.reset(seed=2)
    assert obs.shape == (3 * env.space.k + 6,) and env.observation_space.shape == obs.shape
    per = env.backend.steps_per_segment
    seen = [obs[-1]]
    for _ in range(spec.steps - 1):
        obs, *_ = env.step(np.zeros(env.space.k, np.float32))
        seen.append(obs[-1])
    expect = [lr_at(t * per, spec.steps * per, spec.optim) / spec.optim.lr for t in range(spec.steps)]
    np.testing.assert_allclose(seen, expect, rtol=1e-6)
    assert seen[1] == 1.0 and seen[-1] < 1.0  # stable, then the last segment starts the decay
    assert env.reset(seed=5)[1]["episode_seed"] == episode_seed_of(5)


def test_the_proxy_device_is_a_knob_of_its_own_spec_hash():
    import torch

    default = load_spec(ENVS_DIR / "tiny-cpt.yaml")
    assert load_spec(ENVS_DIR / "tiny-cpt.yaml", ["optim.device=cpu"]).spec_hash() == default.spec_hash()
    cuda = load_spec(ENVS_DIR / "tiny-cpt.yaml", ["optim.device=cuda"])
    assert cuda.spec_hash() != default.spec_hash()  # results differ in the last bits: not the same MDP
    with pytest.raises(ConfigError, match="device must be cpu, cuda or cuda:<index>"):
        load_spec(ENVS_DIR / "tiny-cpt.yaml", ["optim.device=tpu"])
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="torch sees no CUDA device"):
            MixingEnv(cuda)


def test_an_env_refuses_a_reward_whose_measure_cannot_normalise(monkeypatch):
    """Reference runs whose benchmark score is inverted (few items: noise) leave a bits-per-byte reward usable;
    an env asking for the score reward is refused when built, naming the field, not at its first step."""
    from mixagent.env import environment

    noisy = Reference({"bpb": {"source": 2.0, "target": 4.0}, "score": {"source": 0.3, "target": 0.2}},
                      {"bpb": {"source": 3.0, "target": 5.0}, "score": {"source": 0.4, "target": 0.1}})
    monkeypatch.setattr(environment, "get_reference", lambda *a, **k: noisy)
    spec = ENVS_DIR / "tiny-cpt.yaml"
    assert MixingEnv(spec, overrides=["backend=analytic"]).reference is noisy  # normalised_bpb
    with pytest.raises(ConfigError, match="(?s)reward normalised_score of .*source field's score is inverted"):
        MixingEnv(spec, overrides=["backend=analytic", "reward.name=normalised_score"])


def test_anchors_widen_the_extremes_by_hand(env):
    """Scarce target data: target-only overfits (math bpb 3.0) and natural reaches 2.5, so natural is the target
    field's best; uniform is the source field's worst only if it beats target-only at being bad (it does not)."""
    from mixagent.env.references import extremes

    def ev(source: float, target: float) -> EvalResult:
        mask = env.space.field_mask("target")
        bpb = {n: (target if m else source) for n, m in zip(env.space.names, mask, strict=True)}
        return EvalResult(bpb, {"source": 0.5, "target": 0.2}, {"source": 0.5, "target": 0.2})

    runs = {"source_only": [ev(2.0, 4.0), ev(2.2, 4.2)], "target_only": [ev(5.0, 3.0)], "natural": [ev(2.4, 2.5)],
            "uniform": [ev(2.6, 2.8)]}
    best, worst = extremes(runs, env.space)  # without anchors: the two reference runs
    assert best["bpb"] == {"source": pytest.approx(2.1), "target": 3.0}
    assert worst["bpb"] == {"source": 5.0, "target": pytest.approx(4.1)}
    best, worst = extremes(runs, env.space, ("natural", "uniform"))
    assert best["bpb"] == {"source": pytest.approx(2.1), "target": 2.5}
    assert worst["bpb"] == {"source": 5.0, "target": pytest.approx(4.1)}
    # natural now normalises to 1 on the target field; before, it read (4.1 - 2.5) / (4.1 - 3.0) = 1.45
    ref = Reference(best, worst)
    assert ref.normalise("bpb", "target", 2.5) == pytest.approx(1.0)
    # 16k unique target tokens: target-only (32 epochs) ends above source-only on the target field. The pair
    # alone is inverted and refused; with anchors the extremes are the best and worst of every run
    runs["target_only"] = [ev(5.0, 4.5)]
    best, worst = extremes(runs, env.space)
    with pytest.raises(ConfigError, match="target field's bpb is inverted"):
        Reference(best, worst).normalise("bpb", "target", 3.0)
    best, worst = extremes(runs, env.space, ("natural", "uniform"))
    assert best["bpb"]["target"] == 2.5 and worst["bpb"]["target"] == 4.5  # natural best, target-only worst


def test_anchor_runs_are_reference_runs(tmp_path):
    """``reward.anchors`` runs each anchor once per reference seed beside source- and target-only, caches them,
    and takes the extremes over all of them; a spec with anchors has its own hash (a v1 spec keeps its own)."""
    spec = load_spec(ENVS_DIR / "tiny-cpt.yaml", ["backend=analytic", "reward.anchors=[uniform, 'replay:0.5']"])
    plain = load_spec(ENVS_DIR / "tiny-cpt.yaml", ["backend=analytic"])
    assert spec.spec_hash() != plain.spec_hash() and "anchors" not in plain.mdp_dict()["reward"]
    env = MixingEnv(plain)
    ref = get_reference(spec, env.backend, env.space, root=tmp_path)
    cached = json.loads(reference_path(spec.spec_hash(), tmp_path).read_text())
    assert sorted(cached["runs"]) == ["replay:0.5", "source_only", "target_only", "uniform"]
    runs = {k: [EvalResult.from_json(r) for r in v] for k, v in cached["runs"].items()}
    target = {k: np.mean([r.field_bpb(env.space, "target") for r in v]) for k, v in runs.items()}
    assert ref.best["bpb"]["target"] == pytest.approx(min(target["target_only"], target["uniform"],
                                                          target["replay:0.5"]))
    assert ref.worst["bpb"]["target"] == pytest.approx(max(target["source_only"], target["uniform"],
                                                           target["replay:0.5"]))


def write_audit(d, audit_spec, env, cache, anchor_names=("uniform", "replay:0.5"), base=None):
    """An audit directory as the oracle table leaves one: its spec, its base checkpoint (``start.json``), its
    reference pair and ``anchor_names``' runs."""
    from mixagent.env.references import run_static
    from mixagent.env.rewards import ANCHORS_VERSION, anchor_weights

    d.mkdir(parents=True)
    h = audit_spec.spec_hash()
    (d / "spec.json").write_text(json.dumps({"version": 1, "env_id": audit_spec.env_id, "spec_hash": h,
                                             "spec": audit_spec.mdp_dict()}))
    (d / "start.json").write_text(json.dumps({"base": base or env.backend.base_id}))
    (d / "reference.json").write_text(json.dumps(get_reference(audit_spec, env.backend, env.space,
                                                               root=cache).to_json()))
    seeds = [int(s) for s in audit_spec.reference_seeds]
    (d / "anchors.json").write_text(json.dumps({"version": ANCHORS_VERSION, "spec_hash": h, "seeds": seeds, "runs": {
        a: [run_static(env.backend, anchor_weights(a, env.space, env.backend.natural), audit_spec.steps, s).to_json()
            for s in seeds] for a in anchor_names}}))


def test_reference_runs_composed_from_an_audit_of_the_same_runs(tmp_path):
    """``from_audits``: an audit's pair widened by its anchor runs gives what running them for the anchored spec
    gives, stamped with that spec's hash; an anchor run beyond the pair widens it; an audit of other runs, of
    another base checkpoint or without an anchor's runs gives nothing, and an unreadable one is skipped."""
    from mixagent.env.references import from_audits

    anchors = ["reward.anchors=[uniform, 'replay:0.5']"]
    spec = load_spec(ENVS_DIR / "tiny-cpt.yaml", ["backend=analytic", "reward.lam=0.3", *anchors])
    pair = load_spec(ENVS_DIR / "tiny-cpt.yaml", ["backend=analytic"])
    env = MixingEnv(pair)
    base = env.backend.base_id
    want = get_reference(spec, env.backend, env.space, root=tmp_path / "cache")
    audits = tmp_path / "audits"

    def audit(name, audit_spec, anchor_names=("uniform", "replay:0.5"), **kw):
        write_audit(audits / name, audit_spec, env, tmp_path / "cache", anchor_names, **kw)

    audit("a-other-runs", load_spec(ENVS_DIR / "tiny-cpt.yaml", ["backend=analytic", "steps=3"]))
    audit("b-other-seeds", load_spec(ENVS_DIR / "tiny-cpt.yaml", ["backend=analytic", "reference_seeds=[5]"]))
    audit("c-one-anchor", pair, anchor_names=("uniform",))
    audit("d-other-base", pair, base="retrained:0123")
    (audits / "e-unreadable").mkdir()
    (audits / "e-unreadable" / "spec.json").write_text("{not json")
    assert from_audits(spec, audits, env.space, base) is None
    assert from_audits(spec, tmp_path / "none", env.space, base) is None
    audit("f-same-runs", pair)
    got = from_audits(spec, audits, env.space, base)
    assert got.spec_hash == spec.spec_hash() and got.seeds == want.seeds
    for m in ("bpb", "score"):
        assert got.best[m] == pytest.approx(want.best[m], rel=1e-12)
        assert got.worst[m] == pytest.approx(want.worst[m], rel=1e-12)
    # an anchor run beyond the pair widens the extremes: uniform's target domains at 0.5 bits per byte
    stored = json.loads((audits / "f-same-runs" / "anchors.json").read_text())
    for run in stored["runs"]["uniform"]:
        run["bpb"] = {n: (0.5 if env.space.fields[i] == "target" else v) for i, (n, v) in enumerate(run["bpb"].items())}
    (audits / "f-same-runs" / "anchors.json").write_text(json.dumps(stored))
    widened = from_audits(spec, audits, env.space, base)
    assert widened.best["bpb"]["target"] == pytest.approx(0.5) and want.best["bpb"]["target"] > 0.6
    assert widened.worst == got.worst


def test_bad_anchors_are_typed_errors():
    spec = ENVS_DIR / "tiny-cpt.yaml"
    # one set of anchors, however ordered or spelled, is one spec (one hash, one reference cache)
    one = load_spec(spec, ["reward.anchors=[natural, uniform, 'replay:0.50']"])
    assert one.reward.anchors == ("natural", "replay:0.5", "uniform")
    assert one.spec_hash() == load_spec(spec, ["reward.anchors=['replay:0.5', uniform, natural]"]).spec_hash()
    with pytest.raises(ConfigError, match="unknown anchor .uniorm.*did you mean .uniform."):
        load_spec(spec, ["reward.anchors=[uniorm]"])
    with pytest.raises(ConfigError, match="needs a rho in \\[0, 1\\]"):
        load_spec(spec, ["reward.anchors=['replay:2']"])
    with pytest.raises(ConfigError, match="repeats a mixture"):
        load_spec(spec, ["reward.anchors=[uniform, uniform]"])
    with pytest.raises(ConfigError, match="target_only is already a reference run"):
        load_spec(spec, ["reward.anchors=[target_only]"])
    with pytest.raises(ConfigError, match="'balanced_bpb' is not one"):
        load_spec(spec, ["reward.name=balanced_bpb", "reward.anchors=[uniform]"])

"""Policy identities (``mixagent.rollout.identity``): what keys a policy's episodes in the cache. The engine runs
them end to end in tests/study/test_compare.py and tests/agent/test_train.py."""

from __future__ import annotations

import json

from mixagent.domains import Domain, DomainSpace
from mixagent.policies.artifact import random_artifact
from mixagent.policies.registry import PolicyContext
from mixagent.rollout.identity import policy_key

SPACE = DomainSpace("two", [Domain("wiki", "source", ["wiki"]), Domain("math", "target", ["math"])])
CTX = PolicyContext({"wiki": 0.7, "math": 0.3}, batches_per_step=4)


def test_an_artifact_is_keyed_by_its_behaviour_not_by_how_it_was_trained(tmp_path):
    art = random_artifact(tmp_path / "a", SPACE)
    key = policy_key(str(art), CTX)
    assert key.startswith("artifact@")
    meta = json.loads((art / "meta.json").read_text())
    meta["training"] = {"config": {"eval": {"workers": 7}}}  # a resumed run with other evaluation settings
    (art / "meta.json").write_text(json.dumps(meta))
    assert policy_key(str(art), CTX) == key
    meta["action"] = {**meta.get("action", {}), "temperature": 9.0}  # what the policy does: another key
    (art / "meta.json").write_text(json.dumps(meta))
    assert policy_key(str(art), CTX) != key
    other = random_artifact(tmp_path / "b", SPACE, seed=1)  # other weights: another key
    assert policy_key(str(other), CTX) not in (key, policy_key(str(art), CTX))


def test_methods_are_keyed_by_their_fingerprint_and_names_win_over_directories(tmp_path, monkeypatch):
    assert policy_key("odm", CTX) == policy_key("odm", PolicyContext(CTX.natural, batches_per_step=4))
    assert policy_key("odm", CTX) != policy_key("odm", PolicyContext(CTX.natural, batches_per_step=1))
    assert policy_key("replay:0.5", CTX) == "replay:0.5"
    random_artifact(tmp_path / "uniform", SPACE)
    monkeypatch.chdir(tmp_path)  # a directory named like a baseline does not shadow it
    assert policy_key("uniform", CTX) == "uniform"


def test_a_method_key_changes_with_each_input_once(monkeypatch):
    """Every input of a registered method's episodes, changed once, changes its key: the hyperparameters in
    its spec, the context (reference run, natural shares, batches per step) and its rules version; its
    default written out does not (one policy, one set of episodes)."""
    from mixagent.policies import registry
    from mixagent.policies.methods import ReferenceCurve
    from mixagent.rollout.identity import policy_identity

    ref = ReferenceCurve(("wiki", "math"), (0.0, 1.0), ((1.0, 1.0), (0.8, 0.9)), (0.5, 0.5))
    ctx = PolicyContext(CTX.natural, ref, batches_per_step=4)
    key = policy_key("doremi", ctx)
    assert key.startswith("doremi@") and policy_key("doremi:eta=1.0", ctx) == key  # the default, written out
    changed = [policy_key("doremi:eta=0.1", ctx),
               policy_key("doremi", PolicyContext(CTX.natural, ReferenceCurve(
                   ref.domains, ref.progress, ((1.0, 1.0), (0.7, 0.9)), ref.weights), batches_per_step=4)),
               policy_key("doremi", PolicyContext(CTX.natural, ref, batches_per_step=8))]
    assert len({key, *changed}) == 4
    assert policy_key("doremi", PolicyContext({"wiki": 0.5, "math": 0.5}, ref, batches_per_step=4)) == key  # unused
    velocitune = policy_key("velocitune", ctx)  # the natural shares are one of Velocitune's inputs
    assert policy_key("velocitune", PolicyContext({"wiki": 0.5, "math": 0.5}, ref, batches_per_step=4)) != velocitune
    monkeypatch.setitem(registry.RULES, "doremi", registry.RULES["doremi"] + 1)  # a new update rule
    assert policy_key("doremi", ctx) != key
    assert policy_identity("doremi:eta=0.1") == f"doremi:eta=0.1@rules{registry.RULES['doremi']}"
    assert policy_identity("doremi:eta=0.1", ctx) == policy_key("doremi:eta=0.1", ctx)

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

import json

import numpy as np
import pytest
import torch

import mixagent.env.base_model as bm
from mixagent.config import load_config
from mixagent.data.domain_data import DomainData
from mixagent.deploy.start_state import (
    DomainClassifier,
    domain_texts,
    estimate_from_texts,
    estimate_start_mixture,
    sample_texts,
)
from mixagent.domains import Domain, DomainSpace
from mixagent.errors import ConfigError, CorruptArtifactError, DataMissingError, SchemaVersionError
from mixagent.paths import CONFIGS_DIR

LENGTH = 32  # tokens per window and per sample: small enough for the tiny model's 64-token context


@pytest.fixture(scope="module")
def base():
    return bm.get_base_model(load_config(bm.BaseModelConfig, CONFIGS_DIR / "base_model/tiny.yaml"))


@pytest.fixture(scope="module")
def space():
    return DomainSpace.from_yaml(CONFIGS_DIR / "spaces/tiny.yaml")  # wiki, news, fiction | math


@pytest.fixture(scope="module")
def data(space, base):
    return DomainData(space, base.tokenizer, base.tokenizer_hash)


@pytest.fixture(scope="module")
def held_out(data, space, base):
    val = [parts[0][0] for parts in data.val_parts]  # validation passages: never seen by the classifier
    return domain_texts(val, base.tokenizer, space, per_domain=50, length=LENGTH, seed=1)


@pytest.fixture(scope="module")
def clf(data, space, base):
    return DomainClassifier.fit(domain_texts(data.train, base.tokenizer, space, per_domain=150, length=LENGTH), space)


def test_domain_texts_are_seeded_windows(data, space, base):
    a = domain_texts(data.train, base.tokenizer, space, per_domain=3, length=LENGTH, seed=0)
    assert list(a) == list(space.names) and all(len(v) == 3 for v in a.values())
    assert a == domain_texts(data.train, base.tokenizer, space, per_domain=3, length=LENGTH, seed=0)
    assert a != domain_texts(data.train, base.tokenizer, space, per_domain=3, length=LENGTH, seed=1)
    assert "<|endoftext|>" not in "".join(t for v in a.values() for t in v)


def test_classifier_beats_chance_on_held_out_windows(clf, held_out, space):
    # measured 0.895 held out on the tiny space (chance 0.25), 0.84-0.96 per domain
    assert clf.accuracy(held_out) > 0.75
    for name, texts in held_out.items():
        assert clf.accuracy({name: texts}) > 0.5, name


def test_predict_proba_shape_and_rows(clf, held_out, space):
    texts = held_out["math"][:7] + held_out["wiki"][:3]
    p = clf.predict_proba(texts)
    assert p.shape == (10, space.k) and np.all(p >= 0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    assert clf.predict_proba([]).shape == (0, space.k)


def test_json_round_trip_and_refusals(clf, held_out, space):
    d = json.loads(json.dumps(clf.to_json()))
    assert d["kind"] == "mixagent.domain_classifier" and d["format"] == 1 and d["classes"] == list(space.names)
    again = DomainClassifier.from_json(d, space)
    texts = [t for v in held_out.values() for t in v[:5]]
    np.testing.assert_array_equal(again.predict_proba(texts), clf.predict_proba(texts))
    with pytest.raises(SchemaVersionError, match="format"):
        DomainClassifier.from_json({**d, "format": 99}, space)
    other = DomainSpace("other", [Domain("wiki", "source", ["wiki"]), Domain("math", "target", ["math"])])
    with pytest.raises(ConfigError, match="re-fit"):
        DomainClassifier.from_json(d, other)
    nan_coef = [[float("nan")] + row[1:] for row in d["coef"]]
    with pytest.raises(CorruptArtifactError, match="non-finite \\['coef'\\]"):
        DomainClassifier.from_json({**d, "coef": nan_coef}, space)


def test_fit_refuses_missing_unknown_and_empty_domains(held_out, space):
    with pytest.raises(DataMissingError, match="fiction"):
        DomainClassifier.fit({**held_out, "fiction": []}, space)
    with pytest.raises(DataMissingError, match="news"):
        DomainClassifier.fit({n: v for n, v in held_out.items() if n != "news"}, space)
    with pytest.raises(ConfigError, match="did you mean 'math'"):
        DomainClassifier.fit({**held_out, "maths": ["1+1=2"]}, space)


def test_binary_space_classifies(held_out):
    two = DomainSpace("two", [Domain("wiki", "source", ["wiki"]), Domain("math", "target", ["math"])])
    c = DomainClassifier.fit({"wiki": held_out["wiki"], "math": held_out["math"]}, two)
    p = c.predict_proba(held_out["math"][:5] + held_out["wiki"][:5])
    assert p.shape == (10, 2)
    assert (p.argmax(axis=1) == [1] * 5 + [0] * 5).mean() >= 0.8


def test_sample_texts_is_seeded_and_leaves_state_alone(base):
    model, tok = base.model, base.tokenizer
    model.train()
    rng = torch.get_rng_state()
    a = sample_texts(model, tok, n=3, max_new_tokens=8, seed=0, batch_size=2)
    assert torch.equal(torch.get_rng_state(), rng) and model.training
    assert len(a) == 3 and all(isinstance(t, str) for t in a)
    assert a == sample_texts(model, tok, n=3, max_new_tokens=8, seed=0, batch_size=2)
    assert a != sample_texts(model, tok, n=3, max_new_tokens=8, seed=1, batch_size=2)
    model.eval()
    sample_texts(model, tok, n=1, max_new_tokens=4, top_k=None)
    assert not model.training
    with pytest.raises(ConfigError, match="context"):
        sample_texts(model, tok, n=1, max_new_tokens=64)


def test_estimate_from_one_domain_texts_puts_most_weight_there(clf, held_out, space):
    est = estimate_from_texts(held_out["math"], clf, floor=0.05)
    w = est.weights.to_mapping()
    assert max(w, key=w.get) == "math" and w["math"] > 0.6
    assert min(w.values()) >= 0.05 - 1e-12 and abs(sum(w.values()) - 1) < 1e-9
    assert est.counts["math"] == max(est.counts.values()) and sum(est.counts.values()) == est.n_samples == 50
    j = json.loads(json.dumps(est.to_json(n_texts=2)))
    assert j["weights"] == w and len(j["texts"]) == 2


def test_estimate_start_mixture_end_to_end(base, clf, space):
    est = estimate_start_mixture(base.model, base.tokenizer, clf, n_samples=8, max_new_tokens=LENGTH, floor=0.02)
    v = est.weights.values
    assert v.shape == (space.k,) and abs(v.sum() - 1) < 1e-9 and v.min() >= 0.02 - 1e-12
    assert est.n_samples == len(est.texts) == 8
    # the base model was pre-trained on source corpora only: its samples should not look like math
    assert est.mean_proba["math"] < 0.5


def test_bad_floor_and_empty_texts(clf):
    with pytest.raises(ConfigError, match="floor"):
        estimate_from_texts(["some text"], clf, floor=0.25)  # K=4: floor*K = 1
    with pytest.raises(ConfigError, match="floor"):
        estimate_start_mixture(None, None, clf, floor=0.3)  # refused before sampling
    with pytest.raises(DataMissingError):
        estimate_from_texts([], clf)

import math

import torch
import torch.nn.functional as F

from mixagent.data.build import read_tasks
from mixagent.data.tokenizer import token_byte_lengths
from mixagent.env.evaluation import BenchmarkSpec, build_items


def test_champ_items_come_from_held_out_problems():
    items = build_items(BenchmarkSpec(kind="champ_mc", corpora=("math",), max_items=100))
    val = {t["problem"]: t["answer"] for t in read_tasks("math", "val")}
    train = {t["problem"] for t in read_tasks("math", "train")}
    assert len(items) == len(val)
    for it in items:
        problem = it.context.removeprefix("Problem: ").removesuffix("\nAnswer:")
        assert problem in val and problem not in train
        assert it.choices[it.gold] == " " + val[problem]
        assert len(set(it.choices)) == 4


def test_cloze_items_are_deterministic_and_cover_corpora():
    spec = BenchmarkSpec(kind="cloze", corpora=("wiki", "fiction", "code"), unit="sentence", max_items=30)
    a, b = build_items(spec), build_items(spec)
    assert a == b and len(a) == 30
    assert {it.gold for it in a} == {0, 1, 2, 3}  # gold position is shuffled


def test_bits_per_byte_matches_a_manual_computation(tiny_env):
    ev = tiny_env.backend.evaluator
    model = tiny_env.backend.model
    tiny_env.reset(seed=0)
    result = ev(model)
    d = 1  # news
    rows = ev.windows[ev.owner == d]
    with torch.no_grad():
        logits = model(input_ids=rows[:, :-1]).logits
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), rows[:, 1:].reshape(-1), reduction="none")
    lengths = token_byte_lengths(tiny_env.backend.tokenizer)[rows[:, 1:].numpy()].reshape(-1)
    text = torch.from_numpy(lengths > 0)
    assert not text.all()  # the windows do cross document boundaries (EOS), which carry no bytes
    expected = (nll * text).sum().item() / math.log(2) / lengths.sum()
    assert abs(result.bpb["news"] - expected) < 1e-6
    assert 0.5 < result.bpb["news"] < 8


def test_evaluation_respects_the_token_budget(tiny_env):
    ev = tiny_env.backend.evaluator
    assert ev.eval_tokens <= tiny_env.spec_.eval.token_budget
    assert all(len(v) >= 1 for v in ev.items.values())
    r = ev(tiny_env.backend.model)
    assert 0 < r.scores["source"] < 1 and 0 < r.scores["target"] < 1
    assert r.eval_tokens == ev.eval_tokens


def test_test_split_items_are_held_out_and_only_a_non_default_split_changes_the_spec_hash(tiny_spec_path):
    import pytest

    from mixagent.env.spec import load_spec
    from mixagent.errors import ConfigError
    from mixagent.paths import ENVS_DIR

    val = BenchmarkSpec(kind="cloze", corpora=("wiki", "news"), max_items=16)
    test = BenchmarkSpec(kind="cloze", corpora=("wiki", "news"), max_items=16, split="test")
    assert not {i.context for i in build_items(val)} & {i.context for i in build_items(test)}
    math_val = BenchmarkSpec(kind="champ_mc", corpora=("math",), scoring="loglik")
    math_test = BenchmarkSpec(kind="champ_mc", corpora=("math",), scoring="loglik", split="test")
    assert not {i.context for i in build_items(math_val)} & {i.context for i in build_items(math_test)}
    base = load_spec(ENVS_DIR / "math-natural.yaml")
    assert load_spec(ENVS_DIR / "math-natural.yaml", ["eval.source.split=val"]).spec_hash() == base.spec_hash()
    assert load_spec(ENVS_DIR / "math-natural.yaml", ["eval.target.split=test"]).spec_hash() != base.spec_hash()
    with pytest.raises(ConfigError, match="split must be 'val' or 'test', got 'train'"):
        load_spec(tiny_spec_path, ["eval.source.split=train"])


def test_text_split_test_scores_bits_per_byte_on_test_passages_only(tiny_spec_path):
    """``eval.text_split=test`` takes the bits-per-byte windows from the test split (a window is a slice of
    the domain's test tokens and of no validation stream); the default keeps the spec's hash."""
    import numpy as np
    import pytest

    from mixagent.config import load_config
    from mixagent.data.domain_data import DomainData
    from mixagent.domains import DomainSpace
    from mixagent.env import base_model as bm
    from mixagent.env.spec import load_spec
    from mixagent.errors import ConfigError
    from mixagent.paths import CONFIGS_DIR, ENVS_DIR

    base = bm.get_base_model(load_config(bm.BaseModelConfig, CONFIGS_DIR / "base_model/tiny.yaml"))
    space = DomainSpace.from_yaml(CONFIGS_DIR / "spaces/tiny.yaml")
    data = DomainData(space, base.tokenizer, base.tokenizer_hash)
    length = 65

    def contains(stream: np.ndarray, window: np.ndarray) -> bool:
        hits = np.flatnonzero(stream == window[0])
        return any(np.array_equal(stream[h: h + length], window) for h in hits if h + length <= len(stream))

    for d in range(space.k):
        val, test = data.val_windows(d, 6, length), data.val_windows(d, 6, length, "test")
        assert test.shape == val.shape == (6, length)
        assert all(any(contains(s, w) for s, _ in data.test_parts[d]) for w in test)
        assert not any(contains(s, w) for w in test for s, _ in data.val_parts[d])
    sub = DomainData(DomainSpace.from_yaml(CONFIGS_DIR / "spaces/math-sub.yaml"), base.tokenizer,
                     base.tokenizer_hash)  # v1's space: math split by id pattern (match domains)
    for d, dom in enumerate(sub.space.domains):
        if dom.match is None:
            continue
        test = sub.val_windows(d, 6, length, "test")
        assert len(test) == 6 and all(any(contains(s, w) for s, _ in sub.test_parts[d]) for w in test)
        assert not any(contains(s, w) for w in test for s, _ in sub.val_parts[d])
    with pytest.raises(ValueError, match="split must be 'val' or 'test'"):
        data.val_windows(0, 6, length, "train")
    base_spec = load_spec(ENVS_DIR / "math-cpt.yaml")
    assert base_spec.spec_hash() == "6447ab4d8d7a9484"  # v1's hash: the new knob at its default changes nothing
    assert load_spec(ENVS_DIR / "math-cpt.yaml", ["eval.text_split=test"]).spec_hash() != base_spec.spec_hash()
    with pytest.raises(ConfigError, match="text_split must be 'val' or 'test', got 'train'"):
        load_spec(tiny_spec_path, ["eval.text_split=train"])

"""The judge evaluation (``mixagent.env.judge``): scripted judges checked against hand-worked win rates, the
validity check refusing a judge at chance, a tiny causal LM judge built from config, the judge rewards, and
bad input as typed errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mixagent.config import from_dict, load_config
from mixagent.domains import Domain, DomainSpace
from mixagent.env.evaluation import EvalResult
from mixagent.env.judge import (
    JudgeEvaluation,
    JudgeInvalidError,
    JudgeSpec,
    Prefix,
    corrupt,
    cut_prefixes,
    judge_wins,
    load_judge,
    measure_validity,
)
from mixagent.env.rewards import balanced_score, needs_reference, reward_measure, step_reward
from mixagent.errors import ConfigError, DataMissingError
from mixagent.paths import CONFIGS_DIR

FIX = CONFIGS_DIR.parent / "tests/fixtures/deploy"
PREFIXES = {f: [Prefix(f"{f} prefix {i}: the start of a text about things.",
                       f"It goes on well. Then it ends calmly number {i}. A last sentence here.") for i in range(6)]
            for f in ("source", "target")}


class Scripted:
    """P(first preferred) from a rule over the two texts, with a fixed bias toward the first slot; counts
    its calls."""

    identity = "scripted"

    def __init__(self, rule, bias: float = 0.0):
        self.rule, self.bias, self.calls = rule, bias, 0

    def prefer_first(self, triples):
        self.calls += 1
        return np.array([min(1.0, max(0.0, self.rule(c, a, b) + self.bias)) for c, a, b in triples])


REAL = {p.text: p.suffix for ps in PREFIXES.values() for p in ps}


def real_text(prefix: str, a: str, b: str) -> float:
    """Knows each prefix's real suffix: 0.9 for it in slot a, 0.1 in slot b, 0.5 when neither is."""
    return 0.9 if a == REAL[prefix] else 0.1 if b == REAL[prefix] else 0.5


def test_wins_are_averaged_over_both_orders_which_cancels_position_bias():
    # P(x first) = 0.8 + 0.1 bias = 0.9 in slot a; in slot b the judge sees (y, x): P(y first) = 0.2 + 0.1 =
    # 0.3, so x wins 0.7 there; the mean is 0.8, the bias-free preference
    judge = Scripted(lambda c, a, b: 0.8 if a == "x" else 0.2, bias=0.1)
    wins, first, second = judge_wins(judge, [("p", "x", "y")], 0, np.random.default_rng(0))
    assert first[0] == pytest.approx(0.9) and second[0] == pytest.approx(0.7) and wins[0] == pytest.approx(0.8)
    assert judge.calls == 1  # both orders in one batch
    # sampled verdicts: 4000 per order average to the same win within sampling error
    sampled, _, _ = judge_wins(judge, [("p", "x", "y")], 4000, np.random.default_rng(0))
    assert sampled[0] == pytest.approx(0.8, abs=0.02)


def test_validity_of_a_judge_that_knows_real_text_and_of_one_at_chance(tmp_path):
    spec = JudgeSpec()
    good = measure_validity(Scripted(real_text), PREFIXES, spec)
    for v in good.values():  # 0.9 in slot a, 1 - 0.1 in slot b: 0.9 on every pair
        assert v.accuracy == pytest.approx(0.9) and v.ci_low == pytest.approx(0.9) and v.valid
        assert v.items == 6 * 3 and set(v.by_corruption) == {"shuffle", "swap", "noise"}
        assert v.order_agreement == 1.0 and v.position_bias == pytest.approx(0.5)
        assert v.sample_agreement == pytest.approx(0.9 ** 2 + 0.1 ** 2)
    chance = Scripted(lambda c, a, b: 0.5)
    bad = measure_validity(chance, PREFIXES, spec, cache_dir=tmp_path)
    assert all(v.accuracy == pytest.approx(0.5) and not v.valid for v in bad.values())
    # cached under the judge's identity: a second check does not ask the judge
    calls = chance.calls
    assert measure_validity(chance, PREFIXES, spec, cache_dir=tmp_path) == bad and chance.calls == calls
    with pytest.raises(JudgeInvalidError, match="not above chance on field 'source'.*accuracy 0.500"):
        JudgeEvaluation(spec, chance, PREFIXES, tokenizer=None, context_length=128)
    marked = JudgeEvaluation(JudgeSpec(on_invalid="mark"), chance, PREFIXES, tokenizer=None, context_length=128)
    assert marked.marked == ("source", "target")
    # a biased coin that clears 0.5 by a hair is no judge either (min_accuracy)
    hair = measure_validity(Scripted(lambda c, a, b: 0.52 if a == REAL[c] else 0.48), PREFIXES, spec)
    assert all(v.ci_low > 0.5 and not v.valid for v in hair.values())


def test_corruptions_change_the_text_and_are_seeded():
    rng = np.random.default_rng(0)
    s = "One sentence here. Another one there. A third at last."
    shuffled = corrupt(s, "shuffle", "", rng, ["x"])
    assert shuffled != s and sorted(shuffled.split()) == sorted(s.split())
    other = "Other text entirely, and rather longer than the suffix it replaces."
    swapped = corrupt(s, "swap", other, rng, ["x"])  # cut to the suffix's length, at a word boundary
    assert swapped == "Other text entirely, and rather longer than the" and len(s) == 54
    noisy = corrupt(s, "noise", "", np.random.default_rng(1), ["zzz"])
    assert noisy.split().count("zzz") == 3  # 30% of 10 words
    assert corrupt(s, "noise", "", np.random.default_rng(1), ["zzz"]) == noisy


def test_prefixes_are_seeded_cut_at_word_boundaries_and_refused_when_too_few():
    docs = [f"word{i} " * 60 for i in range(10)] + ["short text"]
    a = cut_prefixes(docs, 4, 50, 30, seed=3)
    assert a == cut_prefixes(docs, 4, 50, 30, seed=3) and a != cut_prefixes(docs, 4, 50, 30, seed=4)
    assert all(len(p.text) <= 50 and len(p.suffix) <= 30 and not p.text.endswith(" ") for p in a)
    assert all(p.text.split()[-1].startswith("word") and p.suffix.split()[0].startswith("word") for p in a)
    with pytest.raises(ConfigError, match="10 held-out documents of at least 80 characters, fewer than "
                                          "prefixes=11; lower eval.judge.prefixes"):
        cut_prefixes(docs, 11, 50, 30, seed=0)


@pytest.mark.parametrize("override, match", [
    ("template='Which is better? {a} or {b}'", r"template lacks the slots \['\{prefix\}'\]"),
    ("template='{prefix} {a} {b} {c}'", "slot other than"),
    ("labels=[A, A]", "labels must be two different"),
    ("model=/nowhere/judge", "neither 'smollm2_gguf' nor a local Hugging Face model directory"),
    ("on_invalid=ignore", "on_invalid must be one of"),
    ("mode=likelyhood", "mode must be one of .* \\(did you mean 'likelihood'\\?\\)"),
    ("prefixes=1", "prefixes must be >= 2"),
    ("corruptions=[shuffle, typo]", "corruptions must name some of"),
    ("temperature=0", "temperature must be a finite number > 0"),
    ("temperature=.inf", "temperature must be a finite number > 0, got inf"),
    ("prefixes=0", "prefixes must be >= 2"),
    ("template='{prefix} A: {{a}} B: {b}'", r"template lacks the slots \['\{a\}'\]; .*an escaped"),
    ("template='{prefix} {a} {b'", "template is not a format string"),
])
def test_bad_judge_specs_are_typed_errors_naming_the_field(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(JudgeSpec, None, [override])


def test_a_tiny_causal_lm_judge_built_from_config(tmp_path, tiny_judge):
    import torch

    folder = tiny_judge
    spec = from_dict(JudgeSpec, {"model": str(folder), "prefixes": 3, "max_new_tokens": 8, "batch_size": 2,
                                 "on_invalid": "mark"})
    judge = load_judge(spec)
    triples = [("a prefix", "one text", "another"), ("b", "x y z", "w"), ("c", "longer text here", "no")]
    p = judge.prefer_first(triples)
    assert p.shape == (3,) and np.all((p > 0) & (p < 1))
    assert all(0 < m < 1 for m in judge.label_mass)  # the two labels' share of the vocabulary's probability
    # the padded batch gives each prompt what it gets alone
    assert judge.prefer_first(triples[2:]) == pytest.approx(p[2:], abs=1e-5)
    # the judge's identity follows its weights and template
    assert load_judge(spec).identity == judge.identity
    assert load_judge(from_dict(JudgeSpec, {"model": str(folder), "template": "{prefix}|{a}|{b}"})).identity \
        != judge.identity
    # the evaluation: a model built from config continues the prefixes; scores in [0, 1], cached by state
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(FIX / "tiny-llama"))
    tok = AutoTokenizer.from_pretrained(FIX / "tokenizer")
    ev = JudgeEvaluation(spec, judge, PREFIXES, tok, context_length=128)
    conts = ev.continuations(model, "target")
    assert len(conts) == 6 and all(len(c) == spec.candidates for c in conts)
    assert ev.continuations(model, "target") == conts  # seeded
    scores = ev(model, start=True)
    assert set(scores) == {"source", "target"} and all(0 <= v <= 1 for v in scores.values())
    assert ev(model) == scores and len(ev._cache) == 1
    with torch.no_grad():
        next(model.parameters()).add_(0.5)
    ev(model)
    assert len(ev._cache) == 2 and len(ev.seconds) == 3
    assert ev.describe()["judged_evals"] == 3 and ev.describe()["marked"] == list(ev.marked)


def test_a_likelihood_judge_prefers_the_text_it_would_rather_write_in_either_order(tmp_path, tiny_judge):
    import torch

    folder = tiny_judge
    judge = load_judge(from_dict(JudgeSpec, {"model": str(folder), "mode": "likelihood", "batch_size": 3}))
    pairs = [("the prefix", "one text"), ("the prefix", "another text"), ("b", "x y z")]
    ll = judge.loglik(pairs)
    # by hand: the tiny model's summed log-probabilities of the text tokens after the prefix and a space
    tok, model = judge.tokenizer, judge.model
    for (prefix, text), value in zip(pairs, ll):
        ctx = tok(prefix, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([ctx + tok(" " + text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1], -1)
        assert value == pytest.approx(float(logp[torch.arange(len(ctx) - 1, ids.shape[1] - 1),
                                                 ids[0, len(ctx):]].sum()), abs=1e-4)
    p = judge.prefer_first([("the prefix", "one text", "another text"), ("the prefix", "another text", "one text")])
    # per byte, at the mean length: 8 and 12 bytes
    diff = (ll[0] / 8 - ll[1] / 12) * 10
    assert p[0] == pytest.approx(1 / (1 + np.exp(-diff))) and p[0] + p[1] == pytest.approx(1.0)
    assert judge.identity != load_judge(JudgeSpec(model=str(folder))).identity  # the mode is part of it


def test_every_nth_evaluation_is_judged_and_the_count_restarts_with_a_run():
    import torch

    spec = JudgeSpec(every=2)
    judge = Scripted(real_text)
    ev = JudgeEvaluation(spec, judge, PREFIXES, tokenizer=None, context_length=128)
    ev._score = lambda model: {"source": float(next(model.parameters()).item()), "target": 0.0}  # no generation
    model = torch.nn.Linear(1, 1, bias=False)
    seen, fresh = [], []
    for k in range(5):
        with torch.no_grad():
            model.weight.fill_(k / 10)
        seen.append(ev(model, start=k == 0)["source"])
        fresh.append(ev.last_judged)
    assert seen == pytest.approx([0.0, 0.0, 0.2, 0.2, 0.4])
    assert fresh == [True, False, True, False, True]  # a repeated score is said to be one
    with torch.no_grad():
        model.weight.fill_(0.9)
    assert ev(model, start=True)["source"] == pytest.approx(0.9)  # a new run: judged at once
    ends = JudgeEvaluation(JudgeSpec(every=0), judge, PREFIXES, tokenizer=None, context_length=128)
    ends._score = ev._score
    seen = []
    for k in range(4):
        with torch.no_grad():
            model.weight.fill_(k / 10)
        if k == 3:
            ends.judge_next()  # the run's last evaluation
        seen.append(ends(model, start=k == 0)["source"])
    assert seen == pytest.approx([0.0, 0.0, 0.0, 0.3]) and len(ends.seconds) == 2


def test_an_environment_judges_every_step(tiny_spec_path):
    from mixagent.env.spec import load_spec

    with pytest.raises(ConfigError, match="eval.judge.every must be 1 in an environment, got 2"):
        load_spec(tiny_spec_path, ["eval.judge={every: 2}"])


def test_a_judge_dir_that_is_not_a_causal_lm_or_has_no_weights(tmp_path):
    from transformers import DistilBertConfig

    folder = tmp_path / "encoder"
    DistilBertConfig(vocab_size=64, dim=16, n_layers=1, n_heads=2, hidden_dim=32).save_pretrained(folder)
    with pytest.raises(ConfigError, match="'distilbert' model \\(no architectures\\), not a causal LM"):
        load_judge(JudgeSpec(model=str(folder)))
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "config.json").write_text((FIX / "tiny-llama/config.json").read_text())
    with pytest.raises(DataMissingError, match="no \\*.safetensors weights"):
        load_judge(JudgeSpec(model=str(folder)))
    for text in ("{}", "{not json"):  # a config.json transformers cannot read: a typed error naming the key
        (folder / "config.json").write_text(text)
        with pytest.raises(ConfigError, match="(?s)eval.judge.model.*config.json transformers cannot read"):
            load_judge(JudgeSpec(model=str(folder)))
    # likelihood mode reads no template: one without slots is no error there
    assert from_dict(JudgeSpec, {"mode": "likelihood", "template": "no slots"}).template == "no slots"


def test_judge_rewards_hand_worked_and_a_missing_judge_is_a_typed_error():
    space = DomainSpace("two", [Domain("web", "source", ["wiki"]), Domain("math", "target", ["math"])])

    def ev(judge, bpb=(1.0, 2.0)):
        return EvalResult({"web": bpb[0], "math": bpb[1]}, {"source": 0.3, "target": 0.3}, {}, judge=judge)

    start, now = ev({"source": 0.2, "target": 0.1}), ev({"source": 0.15, "target": 0.4})
    # lam 0.25: 0.25 * (0.4 - 0.1) + 0.75 * (0.15 - 0.2) = 0.075 - 0.0375
    assert balanced_score("judge", 0.25, start, now, space) == pytest.approx(0.0375)
    assert step_reward("judge", 0.25, start, start, now, space) == pytest.approx(0.0375)
    assert needs_reference("judge_bpb") and not needs_reference("judge") and reward_measure("judge_bpb") == "bpb"
    from mixagent.env.rewards import Reference

    ref = Reference(best={"bpb": {"source": 0.5, "target": 1.0}, "score": {"source": 1, "target": 1}},
                    worst={"bpb": {"source": 1.5, "target": 3.0}, "score": {"source": 0, "target": 0}})
    now2 = ev({"source": 0.15, "target": 0.4}, bpb=(1.0, 2.0))  # normalised bpb: source 0.5, target 0.5
    assert balanced_score("judge_bpb", 0.25, start, now2, space, ref) == pytest.approx(0.5 * (0.0375 + 0.5))
    with pytest.raises(ConfigError, match="set eval.judge"):
        balanced_score("judge", 0.5, EvalResult({"web": 1, "math": 1}, {"source": 1, "target": 1}, {}), now, space)


def test_eval_results_keep_their_json_without_a_judge_and_round_trip_with_one():
    plain = EvalResult({"web": 1.0}, {"source": 0.5}, {})
    assert set(plain.to_json()) == {"bpb", "scores", "accuracy", "tokens_seen", "eval_tokens"}
    judged = EvalResult({"web": 1.0}, {"source": 0.5}, {}, judge={"source": 0.25}, judge_marked=("source",))
    d = json.loads(json.dumps(judged.to_json()))
    assert d["judge"] == {"source": 0.25} and d["judge_marked"] == ["source"]
    assert EvalResult.from_json(d) == judged


def test_the_environment_evaluates_with_a_judge_and_rewards_its_change(tmp_path, tiny_spec_path, tiny_judge):
    from mixagent.env.environment import MixingEnv

    folder = tiny_judge
    judge = (f"eval.judge={{model: {folder}, prefixes: 3, prefix_chars: 100, suffix_chars: 60, max_new_tokens: 8, "
             f"on_invalid: mark}}")
    env = MixingEnv(tiny_spec_path, overrides=(judge, "reward.name=judge", "reward.lam=0.25"))
    assert env.spec_.spec_hash() != MixingEnv(tiny_spec_path).spec_.spec_hash()  # the judge is part of the MDP
    _, info = env.reset(seed=0)
    start = EvalResult.from_json(info["eval"])
    assert set(start.judge) == {"source", "target"} and start.judge_marked == ("source", "target")
    _, reward, _, _, info = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
    now = EvalResult.from_json(info["eval"])
    change = {f: now.judge[f] - start.judge[f] for f in ("source", "target")}
    expected = 0.25 * change["target"] + 0.75 * change["source"]
    assert reward == pytest.approx(expected)
    assert env.backend.evaluator.describe()["judge"]["marked"] == ["source", "target"]


def test_a_continuation_much_shorter_than_the_real_text_loses_without_a_verdict():
    import torch

    judge = Scripted(lambda c, a, b: 1.0 if a.startswith("x") else 0.0 if b.startswith("x") else 0.5)
    ev = JudgeEvaluation(JudgeSpec(on_invalid="mark"), judge, PREFIXES, tokenizer=None, context_length=128)
    # one empty continuation (the model stopped at once) and one of a full length, per prefix
    ev.continuations = lambda model, field: [["", "x " * 40] for _ in ev.prefixes[field]]
    scores = ev(torch.nn.Linear(1, 1), start=True)
    assert scores == {"source": 0.5, "target": 0.5}  # the empty half lost, the long half won
    assert list(ev.last_items["source"][:2]) == [0.0, 1.0]


def test_cluster_bootstrap_resamples_whole_prefixes():
    from mixagent.env.judge import cluster_bootstrap

    values = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])  # two prefixes, three items each
    lo, hi = cluster_bootstrap(values, np.array([0, 0, 0, 1, 1, 1]), np.random.default_rng(0))
    assert (lo, hi) == (0.0, 1.0)  # 2 clusters: the means are 0, 0.5 or 1
    lo_i, hi_i = cluster_bootstrap(values, np.arange(6), np.random.default_rng(0))
    assert lo < lo_i and hi_i < hi  # items taken as independent give a narrower interval


def test_the_judge_identity_follows_its_tokenizer_files_and_an_encoder_is_refused(tmp_path, tiny_judge):
    folder = tiny_judge
    spec = JudgeSpec(model=str(folder))
    before = load_judge(spec).identity
    cfg = folder / "tokenizer_config.json"
    cfg.write_text(cfg.read_text().replace("{", '{"chat_template": "{{ messages[0].content }}", ', 1))
    assert load_judge(spec).identity != before  # a new chat template is a new judge
    from transformers import BertConfig

    bert = tmp_path / "bert"
    BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=32, architectures=["BertForMaskedLM"]).save_pretrained(bert)
    with pytest.raises(ConfigError, match="'bert' model \\(BertForMaskedLM\\), not a causal LM"):
        load_judge(JudgeSpec(model=str(bert)))


def test_a_judge_reward_needs_a_judge_and_validity_needs_two_prefixes(tiny_spec_path):
    from mixagent.env.spec import load_spec

    with pytest.raises(ConfigError, match="reward 'judge' reads the judge's scores: set eval.judge"):
        load_spec(tiny_spec_path, ["reward.name=judge"])
    with pytest.raises(ConfigError, match="raise eval.judge.prefixes"):
        measure_validity(Scripted(real_text), {"source": PREFIXES["source"][:1]}, JudgeSpec(prefixes=1))


def test_a_judge_input_past_its_context_or_a_non_finite_verdict_is_a_typed_error(tiny_judge):
    import torch

    config = json.loads((tiny_judge / "config.json").read_text())
    (tiny_judge / "config.json").write_text(json.dumps(config | {"max_position_embeddings": 12}))
    for mode in ("prompt", "likelihood"):
        judge = load_judge(from_dict(JudgeSpec, {"model": str(tiny_judge), "mode": mode}))
        with pytest.raises(ConfigError, match="does not fit the judge's context of 12 positions; lower prefix_chars"):
            judge.prefer_first([("a prefix of some length", "one text that is long enough", "another one")])
    judge = load_judge(from_dict(JudgeSpec, {"model": str(tiny_judge), "mode": "likelihood"}))
    with torch.no_grad():
        next(judge.model.parameters()).fill_(float("nan"))
    with pytest.raises(ConfigError, match="non-finite verdicts"):
        judge.prefer_first([("a", "b", "c")])


def test_likelihood_mode_ignores_labels_and_the_state_digest_follows_the_dtype(tiny_judge, monkeypatch):
    import torch

    from mixagent.env.judge import _state_digest

    load_judge(from_dict(JudgeSpec, {"model": str(tiny_judge), "mode": "likelihood",
                                     "labels": ["a long answer", "another long answer"]}))  # not refused
    with pytest.raises(ConfigError, match="are not single tokens"):
        load_judge(from_dict(JudgeSpec, {"model": str(tiny_judge), "labels": ["a long answer", "another"]}))
    half = torch.nn.Linear(2, 2).to(torch.bfloat16)
    same = torch.nn.Linear(2, 2)
    same.load_state_dict({k: v.float() for k, v in half.state_dict().items()})
    assert _state_digest(half) != _state_digest(same)  # the same values in bf16 and fp32 are two models
    # a relative judge directory: from the working directory when it is there, else from the repository root
    monkeypatch.chdir(tiny_judge)
    assert "model" not in " ".join(JudgeSpec(model="tests/fixtures/deploy/tiny-llama").check())
    assert any("model 'elsewhere'" in p for p in JudgeSpec(model="elsewhere").check())


def test_a_prompted_judge_reads_its_first_label_as_the_first_candidate(tiny_judge):
    """A judge whose logits favour label "A" by 2 nats over "B" prefers the first candidate with probability
    sigmoid(2) = 0.881 (labels swapped: 0.119); in both orders that bias cancels to a win of exactly 0.5."""
    import torch

    judge = load_judge(from_dict(JudgeSpec, {"model": str(tiny_judge)}))
    a, b = judge.label_ids
    vocab = judge.model.config.vocab_size

    class SaysA(torch.nn.Module):
        config = judge.model.config

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, attention_mask=None):
            logits = torch.zeros(*input_ids.shape, vocab)
            logits[..., a], logits[..., b] = 2.0, 0.0
            return type("Out", (), {"logits": logits})()

    judge.model = SaysA()
    p = judge.prefer_first([("a prefix", "one text", "another text"), ("b", "x y", "z w")])
    assert p == pytest.approx([1 / (1 + np.exp(-2.0))] * 2)
    wins, _, _ = judge_wins(judge, [("a prefix", "one text", "another text")], 0, np.random.default_rng(0))
    assert wins[0] == pytest.approx(0.5)


def test_both_texts_are_cut_to_the_shorter_at_a_word_boundary():
    """The judge compares a continuation and the real suffix at equal length: a long continuation is cut back
    to the suffix's length (and a suffix to a shorter continuation's), so length never decides."""
    import torch

    seen = []

    class Recording(Scripted):
        def prefer_first(self, triples):
            seen.extend(triples)
            return super().prefer_first(triples)

    ev = JudgeEvaluation(JudgeSpec(on_invalid="mark"), Recording(lambda c, a, b: 0.5), PREFIXES, tokenizer=None,
                         context_length=128)
    seen.clear()  # the validity check's pairs
    ev.continuations = lambda model, field: [["word " * 60, "a shorter continuation of some length"]
                                             for _ in ev.prefixes[field]]
    ev(torch.nn.Linear(1, 1), start=True)
    suffix = PREFIXES["source"][0].suffix
    for _, x, y in seen:
        assert abs(len(x) - len(y)) <= 12 and max(len(x), len(y)) <= len(suffix)  # within a word, never longer
    assert any(len(x) < len("a shorter continuation of some length") + 1 and y != suffix for _, x, y in seen)


def test_a_prompted_judge_wraps_its_prompt_in_the_chat_template_when_asked(tiny_judge):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_judge)
    tok.chat_template = "{% for m in messages %}<user>{{ m['content'] }}</user>{% endfor %}<assistant>"
    spec = from_dict(JudgeSpec, {"model": str(tiny_judge), "template": "{prefix}|{a}|{b}"})
    from mixagent.env.judge import LMJudge

    chat = LMJudge(None, tok, spec, "digest")
    assert chat.render("p", "x", "y") == "<user>p|x|y</user><assistant>"
    plain = LMJudge(None, tok, from_dict(JudgeSpec, {"model": str(tiny_judge), "template": "{prefix}|{a}|{b}",
                                                     "chat": False}), "digest")
    assert plain.render("p", "x", "y") == "p|x|y" and plain.identity != chat.identity

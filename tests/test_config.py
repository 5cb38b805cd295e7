import dataclasses

import pytest

from mixagent.config import from_dict, load_config, parse_overrides
from mixagent.env.spec import EnvSpec, load_spec
from mixagent.errors import ConfigError
from mixagent.paths import ENVS_DIR


def test_unknown_keys_are_all_listed_with_suggestions(tmp_path):
    text = (ENVS_DIR / "tiny.yaml").read_text().replace("steps: 3", "stpes: 3").replace(
        "segment_tokens:", "segmnt_tokens:")
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    msg = str(err.value)
    assert len(err.value.problems) == 2
    assert "'stpes'" in msg and "did you mean 'steps'" in msg
    assert "'segmnt_tokens'" in msg and "did you mean 'segment_tokens'" in msg


def test_nested_unknown_key_and_bad_values_reported_together():
    with pytest.raises(ConfigError) as err:
        load_spec(ENVS_DIR / "tiny.yaml", ["optim.lrr=0.1", "steps=0", "reward.lam=2", "eval.source.kind=clozee"])
    problems = "\n".join(err.value.problems)
    assert "optim.lrr" in problems and "did you mean 'lr'" in problems
    assert "steps must be >= 1" in problems
    assert "lam must be in [0, 1]" in problems
    assert "did you mean 'cloze'" in problems


def test_type_error_does_not_hide_other_problems():
    with pytest.raises(ConfigError) as err:
        load_spec(ENVS_DIR / "tiny.yaml", ["optim.lr=abc", "steps=0"])
    assert len(err.value.problems) == 2 and "steps must be >= 1" in str(err.value)


def test_wrong_type_names_the_field():
    with pytest.raises(ConfigError, match=r"segment_tokens: expected int, got 'lots'"):
        load_spec(ENVS_DIR / "tiny.yaml", ["segment_tokens=lots"])


def test_overrides_apply_and_parse_yaml_scalars():
    spec = load_spec(ENVS_DIR / "tiny.yaml", ["steps=5", "optim.lr=0.01", "reward.name=balanced_bpb"])
    assert (spec.steps, spec.optim.lr, spec.reward.name) == (5, 0.01, "balanced_bpb")
    assert parse_overrides(["a.b=[1, 2]", "c=x"]) == {"a": {"b": [1, 2]}, "c": "x"}


def test_malformed_override_and_missing_file():
    with pytest.raises(ConfigError, match="is not key=value"):
        parse_overrides(["steps"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(EnvSpec, "envs/nope.yaml")


def test_missing_required_key():
    @dataclasses.dataclass
    class C:
        a: int
        b: str = "x"

    with pytest.raises(ConfigError, match="missing required key 'a'"):
        from_dict(C, {"b": "y"})


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nsteps: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_spec(path)


def test_conflicting_overrides_and_bool_for_number():
    with pytest.raises(ConfigError, match="another override set to a plain value"):
        parse_overrides(["optim=3", "optim.lr=1"])
    with pytest.raises(ConfigError, match="reward.lam: expected a number, got True"):
        load_spec(ENVS_DIR / "tiny.yaml", ["reward.lam=true"])


def test_unknown_corpus_and_model_size():
    with pytest.raises(ConfigError) as err:
        load_spec(ENVS_DIR / "tiny.yaml", ["eval.source.corpora=[wikki]", "eval.batch_size=0"])
    assert "did you mean 'wiki'" in str(err.value) and "batch_size must be >= 1" in str(err.value)
    from mixagent.env.base_model import BaseModelConfig

    with pytest.raises(ConfigError, match="size '0.5M' unknown"):
        from_dict(BaseModelConfig, {"size": "0.5M"})

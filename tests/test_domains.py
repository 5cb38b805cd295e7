import numpy as np
import pytest

from mixagent.data import load_space
from mixagent.domains import Domain, DomainSpace, DomainWeights, action_to_weights, weights_to_action
from mixagent.errors import ActionError, ConfigError, UnknownDomainError, WeightsError
from mixagent.paths import CONFIGS_DIR


@pytest.fixture
def space():
    return DomainSpace.from_yaml(CONFIGS_DIR / "spaces/math-natural.yaml")


@pytest.mark.parametrize("name,k,n_target", [("math-2d", 2, 1), ("math-natural", 8, 1), ("math-52", 52, 12),
                                             ("code-natural", 8, 1), ("tiny", 4, 1)])
def test_spaces_load(name, k, n_target):
    s = DomainSpace.from_yaml(CONFIGS_DIR / f"spaces/{name}.yaml")
    assert s.k == k
    assert s.field_mask("target").sum() == n_target
    assert len(set(s.names)) == k


def test_natural_space_has_six_plus_source_domains(space):
    assert space.field_mask("source").sum() >= 6


def test_unknown_domain_suggests_closest(space):
    with pytest.raises(UnknownDomainError, match="did you mean 'math'"):
        space.index("mathh")
    with pytest.raises(UnknownDomainError, match="did you mean 'fiction'"):
        DomainWeights.from_mapping(space, {"fictoin": 1.0})


def test_space_needs_both_fields_and_unique_names():
    with pytest.raises(ConfigError, match="duplicate"):
        DomainSpace("x", [Domain("a", "source", ["wiki"]), Domain("a", "target", ["math"])])
    with pytest.raises(ConfigError, match="source and one target"):
        DomainSpace("x", [Domain("a", "source", ["wiki"])])


@pytest.mark.parametrize("values,match", [
    ([0.5, 0.5], "has 8 domains"),
    ([-0.1, 0.2, 0.2, 0.2, 0.1, 0.1, 0.2, 0.1], "below the floor"),
    ([np.nan, 0.2, 0.2, 0.2, 0.1, 0.1, 0.1, 0.1], "not finite"),
    ([0.2] * 8, "sum to"),
])
def test_bad_weights_raise(space, values, match):
    with pytest.raises(WeightsError, match=match):
        DomainWeights(space, values)


def test_weights_within_tolerance_are_stored_exactly(space):
    w = DomainWeights(space, [0.25 + 1e-6, -5e-7] + [0.125] * 6)
    assert w.values.min() >= 0 and w.values.sum() == pytest.approx(1.0, abs=1e-15)
    np.random.default_rng(0).choice(8, p=w.values)  # numpy's strict check accepts it


def test_weights_name_the_bad_domain(space):
    with pytest.raises(WeightsError, match="wiki"):
        DomainWeights(space, [-0.1, 0.3, 0.2, 0.2, 0.1, 0.1, 0.1, 0.1])


def test_action_mapping(space):
    w = action_to_weights(space, np.zeros(8))
    np.testing.assert_allclose(w.values, 1 / 8)
    a = np.linspace(-1, 1, 8)
    w = action_to_weights(space, a, temperature=0.5, floor=0.01)
    assert abs(w.values.sum() - 1) < 1e-12 and w.values.min() >= 0.01 - 1e-12
    assert np.all(np.diff(w.values) > 0)
    # the inverse maps back exactly inside the reachable range
    np.testing.assert_allclose(action_to_weights(space, weights_to_action(w, 0.5, 0.01), 0.5, 0.01).values,
                               w.values, rtol=1e-5)


def test_bad_actions(space):
    with pytest.raises(ActionError, match=r"expected \(8,\)"):
        action_to_weights(space, np.zeros(3))
    with pytest.raises(ActionError, match="non-finite"):
        action_to_weights(space, np.array([np.inf] + [0.0] * 7))
    with pytest.raises(ConfigError, match="floor"):
        action_to_weights(space, np.zeros(8), floor=0.2)


def test_space_file_errors(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\ndomains:\n  - {name: a, field: source, corpora: [wikii]}\n"
                    "  - {name: b, field: target, corpora: [math], cluster: 2}\n")
    with pytest.raises(ConfigError) as err:
        load_space(path)
    assert "did you mean 'wiki'" in str(err.value) and "set by a 'clusters' block" in str(err.value)

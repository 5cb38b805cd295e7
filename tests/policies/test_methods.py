"""The published mixing methods: each update rule against values worked out by hand from the
formulas in its docstring (the arithmetic is in the comments), and their bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mixagent.domains import Domain, DomainSpace
from mixagent.errors import ConfigError, UsageError
from mixagent.policies import (
    ADOPolicy,
    AioliPolicy,
    DecaySwitchPolicy,
    DoReMiPolicy,
    EndUpsamplePolicy,
    ODMPolicy,
    PolicyContext,
    ReferenceCurve,
    VelocitunePolicy,
    build_policy,
    fit_regmix,
    policy_from_spec,
    sample_mixtures,
)
from mixagent.policies.methods import fit_power_law


def two() -> DomainSpace:
    return DomainSpace("two", [Domain("wiki", "source", ["wiki"]), Domain("math", "target", ["math"])])


def four() -> DomainSpace:
    return DomainSpace("four", [Domain("a", "source", ["wiki"]), Domain("b", "source", ["news"]),
                                Domain("c", "target", ["math"]), Domain("d", "target", ["code"])])


HALF = {"wiki": 0.5, "math": 0.5}


def obs(weights, loss, progress, change=None, lr=None) -> np.ndarray:
    """An observation in ``mixagent.env.observation``'s layout: ``loss`` is ``b_t / b_0``."""
    k = len(weights)
    change = np.zeros(k) if change is None else change
    tail = [progress] if lr is None else [progress, lr]
    return np.array([*weights, *(np.asarray(loss) - 1.0), *change, 0, 0, 0, 0, *tail], dtype=np.float32)


def ref2() -> ReferenceCurve:
    return ReferenceCurve(("wiki", "math"), (0.0, 1.0), ((1.0, 1.0), (0.8, 0.9)), (0.5, 0.5), "test")


def test_doremi_update_matches_hand_computation():
    p = DoReMiPolicy(ref2(), eta=0.5, reference_at="progress")
    p.reset(two())
    assert p.act(obs([0.5, 0.5], [1, 1], 0.0)).values == pytest.approx([0.5, 0.5])  # uniform start
    # progress 0.5: reference (0.9, 0.95), losses (1.1, 0.9) -> excess (0.2, 0);
    # alpha = softmax(log .5 + .5 * (.2, 0)) = (e^.1, 1) / (e^.1 + 1), then .999 alpha + .001 / 2
    w = p.act(obs([0.5, 0.5], [1.1, 0.9], 0.5)).values
    assert w == pytest.approx([0.5249542083, 0.4750457917], abs=1e-8)
    # progress 1: reference (0.8, 0.9), losses (0.8, 1.0) -> excess (0, 0.1); alpha carried from the last step:
    # alpha ~ alpha_1 * (1, e^.05), smoothed again
    w = p.act(obs([0.5, 0.5], [0.8, 1.0], 1.0)).values
    assert w == pytest.approx([0.5124598981, 0.4875401019], abs=1e-8)


def test_doremi_average_variant_and_needs_a_reference():
    p = DoReMiPolicy(ref2(), average=True, reference_at="progress")
    p.reset(two())
    p.act(obs([0.5, 0.5], [1, 1], 0.0))
    # eta 1: excess (0.2, 0) gives (e^.2, 1) / (e^.2 + 1) = (0.549834, 0.450166), smoothed (0.549784, 0.450216);
    # the variant drives with the mean of the start (.5, .5) and that
    w = p.act(obs([0.5, 0.5], [1.1, 0.9], 0.5)).values
    assert w == pytest.approx([(0.5 + 0.5497841633) / 2, (0.5 + 0.4502158367) / 2], abs=1e-7)
    with pytest.raises(ConfigError, match="needs a reference run"):
        DoReMiPolicy(None)
    with pytest.raises(ConfigError, match="needs a reference run"):
        build_policy("doremi", PolicyContext(natural=HALF))
    other = ReferenceCurve(("a", "b"), (0.0, 1.0), ((1.0, 1.0), (0.8, 0.9)), (0.5, 0.5))
    with pytest.raises(ConfigError, match="record the reference run in this space"):
        DoReMiPolicy(other).reset(two())


def test_doremi_updates_per_optimizer_batch_against_the_trained_reference():
    p = DoReMiPolicy(ref2(), eta=0.5, batches_per_step=3)  # the reference model trained to the end: (0.8, 0.9)
    p.reset(two())
    p.act(obs([0.5, 0.5], [1, 1], 0.0))
    # progress 0.5, losses (1.1, 0.9): excess over the end (0.3, 0); three batches, each multiplying the odds by
    # e^(0.5 * 0.3) = e^0.15 before smoothing: odds e^0.45 -> (0.61064, 0.38936), smoothing nudges to 1/2
    w = p.act(obs([0.5, 0.5], [1.1, 0.9], 0.5)).values
    assert w == pytest.approx([0.61042054, 0.38957946], abs=1e-7)
    with pytest.raises(ConfigError, match="reference_at must be one of"):
        DoReMiPolicy(ref2(), reference_at="middle")


def test_doremi_in_the_registry_counts_the_env_batches_and_leaves_uniform():
    """The fault: one update per re-weighting step kept v1's DoReMi within total variation 0.02 of uniform."""
    ten = DomainSpace("ten", [Domain(f"s{i}", "source", ["wiki"]) for i in range(5)]
                      + [Domain(f"t{i}", "target", ["math"]) for i in range(5)])
    ref = ReferenceCurve(tuple(ten.names), (0.0, 1.0), ((1.0,) * 10, (0.95,) * 5 + (0.85,) * 5), (0.1,) * 10)
    p = build_policy("doremi", PolicyContext(reference=ref, batches_per_step=64))
    p.reset(ten)
    loss = [0.97] * 5 + [0.93] * 5  # the target field is further from its reference
    for t in range(3):
        w = p.act(obs([0.1] * 10, loss if t else [1] * 10, t / 8)).values
    assert 0.5 * np.abs(w - 0.1).sum() > 0.2 and w[5:].sum() > 0.7


def test_odm_exp3_update_matches_hand_computation():
    k = 4
    p = ODMPolicy(warmup=0)
    p.reset(four())
    assert p.act(obs([0.25] * 4, [1] * 4, 0.0)).values == pytest.approx([0.25] * 4)
    loss = [0.9, 0.8, 1.0, 0.7]
    for t in range(1, 7):
        w = p.act(obs([0.25] * 4, loss, t / 8)).values
        if t <= 5:  # eps_t = min(1/4, sqrt(ln 4 / (4 t))) stays 1/4 up to t = 5, so w_k = 0 * ... + 1/4
            assert w == pytest.approx([0.25] * 4, abs=1e-12)
    # t = 6: R = 6 L / 10; eps_5 = 1/4, eps_6 = sqrt(ln 4 / 24) = 0.2403378;
    # w_k = exp(R_k / 4) (1 - 4 eps_6) / sum_j exp(R_j / 4) + eps_6, normalised
    assert ODMPolicy.epsilon(k, 6) == pytest.approx(math.sqrt(math.log(4) / 24))
    assert w == pytest.approx([0.25007137, 0.24992646, 0.25021847, 0.24978370], abs=1e-8)


def test_odm_counts_batches_so_short_runs_can_move():
    ten = DomainSpace("ten", [Domain(f"s{i}", "source", ["wiki"]) for i in range(5)]
                      + [Domain(f"t{i}", "target", ["math"]) for i in range(5)])
    loss = np.linspace(0.6, 1.0, 10)
    per_step = ODMPolicy()
    per_step.reset(ten)
    batched = ODMPolicy(batches_per_step=64)
    batched.reset(ten)
    for t in range(8):
        a = per_step.act(obs([0.1] * 10, loss if t else [1] * 10, t / 8)).values
        b = batched.act(obs([0.1] * 10, loss if t else [1] * 10, t / 8)).values
    assert a == pytest.approx([0.1] * 10, abs=1e-12)  # eps_t = 1/K until t > K ln K = 23: uniform
    # B = 64: after 7 updates, t = 448 and R = 448 L / 10 (warm-up 1 step: the first update is uniform)
    t = 7 * 64
    prev, now = math.sqrt(math.log(10) / (10 * (t - 1))), math.sqrt(math.log(10) / (10 * t))
    e = np.exp(prev * t * loss / 10)
    w = e * (1 - 10 * now) / e.sum() + now
    assert b == pytest.approx(w / w.sum(), abs=1e-9)
    assert b[-1] > b[0] + 0.02  # the highest-loss domain gains


def test_fit_power_law_recovers_a_known_law():
    n = np.array([0.05, 0.1, 0.2, 0.4, 0.8])
    e, a, alpha = fit_power_law(n, 0.4 + 0.2 * n ** -0.5)
    assert (math.exp(e), math.exp(a), alpha) == pytest.approx((0.4, 0.2, 0.5), rel=1e-3)
    with pytest.raises(ValueError, match=">= 3 points"):
        fit_power_law(n[:2], n[:2])


def test_ado_update_matches_hand_computation():
    mu = {"wiki": 0.7, "math": 0.3}
    p = ADOPolicy(mu)
    p.reset(two())
    assert p.act(obs([0.7, 0.3], [1, 1], 0.0)).values == pytest.approx([0.7, 0.3])

    def law(n):  # wiki: 0.4 + 0.2 n^-0.5, math: 0.6 + 0.1 n^-0.3 (n in budgets)
        return [0.4 + 0.2 * n[0] ** -0.5, 0.6 + 0.1 * n[1] ** -0.3]

    for progress in (0.25, 0.5):  # fewer than 3 points per domain: the natural shares
        n = [0.7 * progress, 0.3 * progress]  # trained on mu, so h stays mu
        assert p.act(obs([0.7, 0.3], law(n), progress)).values == pytest.approx([0.7, 0.3])
    # progress 0.75: n = (.525, .225); speed_k = alpha_k (L_k - e^e_k) / n_k = alpha A n^-alpha / n;
    # score = speed * mu * sqrt(h (1 - h)) with h = mu; rho = score / sum = (0.746239, 0.253761); pi = rho
    w = p.act(obs([0.7, 0.3], law([0.525, 0.225]), 0.75)).values
    assert w == pytest.approx([0.7462393, 0.2537607], abs=2e-3)
    # progress 1: rho_2 = (0.735190, 0.264810); pi = 0.9 * mean(rho_1, rho_2) + 0.1 * rho_2
    w = p.act(obs([0.7, 0.3], law([0.7, 0.3]), 1.0)).values
    assert w == pytest.approx([0.7401624, 0.2598376], abs=2e-3)


def test_velocitune_update_matches_hand_computation():
    p = VelocitunePolicy(HALF, ref2())  # two reference points: no fit, targets = the last values (0.8, 0.9)
    p.reset(two())
    assert p.target == pytest.approx([0.8, 0.9])
    p.act(obs([0.5, 0.5], [1, 1], 0.0))
    # V = ((0.85 - 0.8) / 0.2, (0.95 - 0.9) / 0.1) = (0.25, 0.5): w = (e^.25, e^.5) / sum
    assert p.act(obs([0.5, 0.5], [0.85, 0.95], 0.75)).values == pytest.approx([0.4378235, 0.5621765], abs=1e-7)


def test_velocitune_targets_from_a_scaling_law_fit_at_the_full_budget():
    # a reference run on (0.5, 0.5) whose losses follow L_k(D) = E + B D^-beta in the tokens D = 0.5 * progress:
    # wiki (0.5, 0.1, 0.5), math (0.6, 0.05, 0.8)
    laws = [(0.5, 0.1, 0.5), (0.6, 0.05, 0.8)]
    progress = (0.0, 0.25, 0.5, 0.75, 1.0)
    loss = ((1.0, 1.0),) + tuple(tuple(e + b * (0.5 * x) ** -beta for e, b, beta in laws) for x in progress[1:])
    ref = ReferenceCurve(("wiki", "math"), progress, loss, (0.5, 0.5))
    p = VelocitunePolicy({"wiki": 0.6, "math": 0.4}, ref)
    p.reset(two())
    # targets extrapolated to the whole budget on each domain (D = 1): 0.5 + 0.1, 0.6 + 0.05 -- below the
    # reference's own endpoint (0.5 + 0.1 * 0.5^-0.5 = 0.641, 0.6 + 0.05 * 0.5^-0.8 = 0.687)
    assert p.target == pytest.approx([0.6, 0.65], abs=1e-4)
    assert np.all(p.target < np.asarray(loss[-1]) - 0.03)
    p.act(obs([0.6, 0.4], [1, 1], 0.0))
    # V = (L - L*) / (1 - L*) = (0.75, 0.714) then (0.5, 0.571); w <- w * exp(V), normalised, carried along
    assert p.act(obs([0.6, 0.4], [0.9, 0.9], 0.5)).values == pytest.approx([0.60854, 0.39146], abs=1e-4)
    assert p.act(obs([0.6, 0.4], [0.8, 0.85], 1.0)).values == pytest.approx([0.59140, 0.40860], abs=1e-4)
    assert p.diagnostics() == {"saturated": 0.0, "fit_failures": 0}


def test_velocitune_reports_saturated_velocities():
    """The fault: targets at the reference's endpoint pinned the velocity of domains already learned."""
    p = VelocitunePolicy(HALF, ref2())  # no fit (two points): the targets are the endpoint (0.8, 0.9)
    p.reset(two())
    p.act(obs([0.5, 0.5], [1, 1], 0.0))
    p.act(obs([0.5, 0.5], [0.75, 1.02], 0.5))  # wiki below its target (V = 0), math above its start (V = 1)
    assert p.diagnostics() == {"saturated": 1.0, "fit_failures": 2}


PROBES = np.array([[1.0, 1.0], [0.98, 0.995], [0.975, 0.985]])  # before, after probe 0, after probe 1


def test_aioli_estimates_its_law_from_probes():
    p = AioliPolicy(HALF, eta=2.0)
    p.reset(two())
    plan = p.probe_plan(obs([0.5, 0.5], [1, 1], 0.0))
    assert plan.mixtures == pytest.approx(np.array([[0.8, 0.2], [0.2, 0.8]])) and plan.batches == 1
    p.observe_probes(PROBES)
    # decreases D[j, i]: probe 0 (0.02, 0.005), probe 1 (0.005, 0.01); row i of A solves P A_i = D[:, i] with
    # P^-1 = [[.8, -.2], [-.2, .8]] / 0.6: A = [[0.025, 0], [0.00333, 0.01167]], column sums (0.02833, 0.01167);
    # p = (.5, .5) * exp(2 * sums), normalised: odds e^(2 * 0.016667)
    w = p.act(obs([0.5, 0.5], [1, 1], 0.0)).values
    assert w == pytest.approx([0.50833256, 0.49166744], abs=1e-7)
    assert p.law(PROBES) == pytest.approx(np.array([[0.025, 0.0], [0.0033333, 0.0116667]]), abs=1e-6)


def test_aioli_without_probes_keeps_its_weights_and_counts_it(caplog):
    """Fitting the law on the run's own near-collinear mixtures is not Aioli: without probes it decides
    nothing, and says so (``fallbacks``), instead of blaming common loss changes on the heaviest domain."""
    p = AioliPolicy(HALF)
    p.reset(two())
    with caplog.at_level("WARNING"):
        w = p.act(obs([0.8, 0.2], [0.9, 0.98], 0.25, change=[-0.1, -0.02])).values
    assert w == pytest.approx([0.5, 0.5]) and p.fallbacks == 1 and "no finite probe losses" in caplog.text


def test_online_methods_keep_their_weights_on_non_finite_losses(caplog):
    p = ADOPolicy(HALF)
    p.reset(two())
    p.act(obs([0.5, 0.5], [1, 1], 0.0))
    before = p.act(obs([0.8, 0.2], [0.9, 0.98], 0.25, change=[-0.1, -0.02])).values
    bad = obs([0.8, 0.2], [0.9, 0.98], 0.5, change=[-0.1, -0.02])
    bad[2] = np.nan
    with caplog.at_level("WARNING"):
        after = p.act(bad).values
    assert after == pytest.approx(before) and p.fallbacks == 1
    assert "non-finite" in caplog.text
    with pytest.raises(UsageError, match="expected"):
        p.act(np.zeros(4))


def test_decay_switch_follows_the_learning_rate():
    p = DecaySwitchPolicy(HALF)  # 0.5 before the decay, 0.25 during it
    p.reset(two())
    source = [p.act(obs([0.5, 0.5], [1, 1], t / 6, lr=lr)).values[0] for t, lr in enumerate([0.5, 1, 1, 0.6, 0.2, 1])]
    # rises (warm-up), holds, decays from step 3 on; the switch holds once made
    assert source == pytest.approx([0.5, 0.5, 0.5, 0.25, 0.25, 0.25])
    p.reset(two())  # observation version 2: the LR at the same place, the stated setting after it
    setting = [0.9, 0.0, 1.0, 1.0, 0.25]
    v2 = [p.act(np.append(obs([0.5, 0.5], [1, 1], t / 6, lr=lr), setting).astype(np.float32)).values[0]
          for t, lr in enumerate([0.5, 1, 1, 0.6, 0.2, 1])]
    assert v2 == pytest.approx(source)
    p.reset(two())
    with pytest.raises(UsageError, match="switch="):
        p.act(obs([0.5, 0.5], [1, 1], 0.0))
    q = DecaySwitchPolicy(HALF, switch=0.5)
    q.reset(two())
    assert [q.act(obs([0.5, 0.5], [1, 1], t / 4)).values[0] for t in range(4)] == pytest.approx([.5, .5, .25, .25])
    with pytest.raises(ConfigError, match="stable_rho"):
        DecaySwitchPolicy(HALF, stable_rho=1.5)


def test_end_upsample_switches_for_the_last_share():
    p = EndUpsamplePolicy(HALF, rho=0.5, end_rho=0.1, last=0.2)
    p.reset(two())
    # T = 8: floor(0.2 * 8) = 1 upsampled segment, the last (12.5% of the run)
    assert [p.act(obs([0.5, 0.5], [1, 1], t / 8)).values[0] for t in range(8)] == pytest.approx([0.5] * 7 + [0.1])
    # T = 4: floor(0.8) = 0, so at least the last segment; T = 20: the last 4
    p.reset(two())
    assert [p.act(obs([0.5, 0.5], [1, 1], t / 4)).values[0] for t in range(4)] == pytest.approx([0.5] * 3 + [0.1])
    p.reset(two())
    got = [p.act(obs([0.5, 0.5], [1, 1], t / 20)).values[0] for t in range(20)]
    assert got == pytest.approx([0.5] * 16 + [0.1] * 4)
    with pytest.raises(ConfigError, match="last"):
        EndUpsamplePolicy(HALF, last=0.0)


def test_two_phase_is_the_audit_schedule_as_a_policy():
    """The audit's ``two-phase 0.9->0.2 @2`` row: rho 0.9 for the first 2 of 8 segments, then 0.2; the same
    rule from its spec, the switch counted in segments whatever the horizon."""
    from mixagent.rollout.schedules import Schedule

    p = build_policy("two_phase:rho1=0.9,rho2=0.2,switch=2", PolicyContext(HALF))
    p.reset(two())
    got = [p.act(obs([0.5, 0.5], [1, 1], t / 8)).values for t in range(8)]
    row = Schedule("two-phase 0.9->0.2 @2", "two_phase", (0.9,) * 2 + (0.2,) * 6)
    natural = np.array([0.5, 0.5])
    assert np.allclose(got, [row.weights(two(), natural, t) for t in range(8)])
    assert [w[0] for w in got] == pytest.approx([0.9] * 2 + [0.2] * 6)
    p.reset(two())  # a 4-segment run switches after 2 segments too
    assert [p.act(obs([0.5, 0.5], [1, 1], t / 4)).values[0] for t in range(4)] == pytest.approx([.9, .9, .2, .2])
    with pytest.raises(ConfigError, match="switch must be a whole number"):
        build_policy("two_phase:switch=0", PolicyContext(HALF))
    with pytest.raises(ConfigError, match="rho2 must be in"):
        build_policy("two_phase:rho2=1.5", PolicyContext(HALF))


def test_regmix_ranks_and_finds_a_known_optimum():
    natural = np.array([0.4, 0.3, 0.2, 0.1])
    best = np.array([0.1, 0.2, 0.3, 0.4])
    x = sample_mixtures(natural, 64, seed=0)
    y = -((x - best) ** 2).sum(axis=1)
    fit = fit_regmix(x, y, natural, seed=0)
    assert fit.spearman > 0.7  # 0.79 here; an unfitted model ranks at about 0
    found = fit.best_mixture(seed=1, n_sim=5000, top=20)
    assert found.sum() == pytest.approx(1.0)
    assert np.abs(found - best).sum() < 0.6 * np.abs(natural - best).sum()  # well on the way from natural
    with pytest.raises(ConfigError, match="at least 10 proxy runs"):
        fit_regmix(x[:6], y[:6], natural)
    y_bad = y.copy()
    y_bad[3] = np.nan
    with pytest.raises(ConfigError, match="finite"):
        fit_regmix(x, y_bad, natural)


def test_registry_names_and_suggestions():
    space = two()
    for name in ("decay_switch", "end_upsample", "odm", "ado", "aioli"):
        policy = policy_from_spec(name, HALF)
        policy.reset(space)
        assert policy.act(obs([0.5, 0.5], [1, 1], 0.0, lr=0.5)).values.sum() == pytest.approx(1.0)
    assert build_policy("regmix", PolicyContext(regmix={"wiki": 0.3, "math": 0.7})).__class__.__name__ == "FixedPolicy"
    with pytest.raises(ConfigError, match="did you mean 'doremi'"):
        build_policy("doremy", PolicyContext())
    with pytest.raises(ConfigError, match="not fitted"):
        build_policy("regmix", PolicyContext())
    with pytest.raises(ConfigError, match="natural token shares"):
        build_policy("ado", PolicyContext()).reset(space)


@pytest.mark.parametrize("make", [
    lambda: DoReMiPolicy(ref2(), eta=0.5), lambda: ODMPolicy(batches_per_step=4), lambda: ADOPolicy(HALF),
    lambda: VelocitunePolicy(HALF, ref2()), lambda: AioliPolicy(HALF),
    lambda: DecaySwitchPolicy(HALF), lambda: EndUpsamplePolicy(HALF)])
def test_running_state_resumes_a_method_exactly(make):
    """A deployment resumed from a checkpoint restores the method's running state (through JSON, as the
    checkpoint stores it) and continues with the decisions the uninterrupted run makes."""
    import json

    rng = np.random.default_rng(0)
    steps = [obs(w, 1 - 0.1 * t * rng.random(2), t / 8, change=-0.05 * rng.random(2), lr=1.0 - 0.1 * max(0, t - 3))
             for t, w in enumerate([[0.5, 0.5]] * 8)]
    def act(policy, t: int) -> np.ndarray:
        if isinstance(policy, AioliPolicy):  # a probing method gets its probes before each decision
            policy.observe_probes(PROBES * (1 - 0.01 * t) + 0.002 * t * np.array([[0, 1], [1, 0], [0, 0]]))
        return policy.act(steps[t]).values

    whole = make()
    whole.reset(two())
    done = [act(whole, t) for t in range(8)]
    first = make()
    first.reset(two())
    for t in range(5):
        act(first, t)
    resumed = make()
    resumed.reset(two())
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert [act(resumed, t).tolist() for t in range(5, 8)] == [w.tolist() for w in done[5:]]
    fresh = make()
    fresh.reset(two())
    if not isinstance(whole, DoReMiPolicy | VelocitunePolicy):  # reference-driven rules may not depend on history
        assert [act(fresh, t).tolist() for t in range(5, 8)] != [w.tolist() for w in done[5:]]
    with pytest.raises(ValueError, match="cannot be loaded into"):
        fresh.load_state_dict({"class": "Other", "state": {}})

"""Why the reference agent falls back to natural-like shares in the trainer-2m case: replay the committed deploy
reports' evaluations through a fresh MixingScheduler (no training; about 10 s), check that the replay gives the
recorded decisions, then change one group of observation features at a time and print the math share of every
decision (6 decisions a run, seeds 0-2).

    .venv/bin/python scripts/start_state_replay.py > audits/compare/v1-generalize/start_state_replay.txt
"""

import glob
import json

import numpy as np

from mixagent.agent.dataset import build_transitions, load_trajectories
from mixagent.deploy.scheduler import MixingScheduler, SchedulerConfig
from mixagent.domains import DomainSpace, DomainWeights
from mixagent.env.evaluation import EvalResult
from mixagent.paths import REPO_ROOT
from mixagent.policies import load_policy

AGENT = REPO_ROOT / "checkpoints/agents/math-cpt-v1"
space = DomainSpace.from_yaml(REPO_ROOT / "configs/spaces/math-sub.yaml")  # the deploy job's space: v1's 10 domains
k, tgt = space.k, space.field_mask("target")
data = load_trajectories([REPO_ROOT / "trajectories/reference/math-cpt-v1"])
natural = np.asarray(data.trajectories[0][1].header["start_weights"])  # the deploy job starts at natural shares
train_obs = build_transitions(data, "normalised_bpb", 0.5).observations


def replay(history, edit=None):
    """Math share of each decision when ``edit(obs)`` changes the observation in place before the policy sees it."""
    sched = MixingScheduler(load_policy(AGENT), space, DomainWeights(space, natural), SchedulerConfig())
    build = sched.obs_builder

    def observe(*args, **kwargs):
        obs = build(*args, **kwargs)
        if edit is not None:
            edit(obs)
        return obs

    sched.obs_builder = observe
    for e in history:
        sched.step(EvalResult.from_json(e["eval"]), e["progress"], e.get("lr"))  # the LR the policy saw
    return [np.asarray(h["proposal"]) for h in sched.history]


def cap_scores(obs):  # the target score's rise and step change at the training data's maxima
    hi = train_obs[:, 3 * k:3 * k + 5].max(0)
    obs[3 * k + 1], obs[3 * k + 3] = min(obs[3 * k + 1], hi[1]), min(obs[3 * k + 3], hi[3])


def shrink_target_losses(obs):  # the target domains' loss fall as on base-2m's base (about 0.3x)
    obs[k:2 * k][tgt] *= 0.3
    obs[2 * k:3 * k][tgt] *= 0.3


def both(obs):
    shrink_target_losses(obs)
    cap_scores(obs)


def swap(prior_history, cols):
    """Put the observation entries ``cols`` of the same seed's trainer-2m-prior run in place of this run's."""
    donor = iter(_observations(prior_history))

    def edit(obs):
        obs[cols] = next(donor)[cols]
    return edit


def _observations(history):
    seen = []
    sched = MixingScheduler(load_policy(AGENT), space, DomainWeights(space, natural), SchedulerConfig())
    build = sched.obs_builder
    sched.obs_builder = lambda *a, **kw: seen.append(build(*a, **kw)) or seen[-1]
    for e in history:
        sched.step(EvalResult.from_json(e["eval"]), e["progress"], e.get("lr"))  # the LR the policy saw
    return seen


SCORES = np.arange(3 * k, 3 * k + 4)  # source and target score: relative to the start and the last change
LOSSES = np.r_[k:3 * k]  # every domain's bpb relative to the start and its last change

rel = train_obs[:, 3 * k + 1]
print(f"training data: target score relative to the start in [{rel.min():+.2f}, {rel.max():+.2f}]; target-domain "
      f"bpb relative to the start >= {train_obs[:, k:2 * k][:, tgt].min():+.3f}")
for case in ("v1-trainer-2m", "v1-trainer-2m-prior"):
    for path in sorted(glob.glob(f"{REPO_ROOT}/audits/compare/{case}/reports/checkpoints_agents_math-cpt-v1-*/*.json")):
        history = json.load(open(path))["report"]["history"]
        s0 = history[0]["eval"]["scores"]["target"]
        b0 = np.array([history[0]["eval"]["bpb"][n] for n in space.names])
        b1 = np.array([history[-1]["eval"]["bpb"][n] for n in space.names])
        got = replay(history)
        err = max(float(np.abs(g - np.asarray(h["proposal"])).max()) for g, h in zip(got, history))
        s1 = history[-1]["eval"]["scores"]["target"]
        print(f"\n{case} seed {path.rsplit('/', 1)[1][:-5]}: replay error {err:.1e}; target score {s0:.3f} -> "
              f"{s1:.3f} (relative {s1 / s0 - 1:+.2f}); "
              f"target bpb relative at the end {np.round((b1 / b0 - 1)[tgt], 3)}")
        edits = [("as recorded", None), ("target score capped", cap_scores),
                 ("target losses x0.3", shrink_target_losses), ("both", both)]
        if case == "v1-trainer-2m":  # the same seed's run on the base that saw math, one feature group at a time
            prior = json.load(open(path.replace("v1-trainer-2m/", "v1-trainer-2m-prior/")))["report"]["history"]
            edits += [("source score from -prior", swap(prior, SCORES[0::2])),
                      ("target score from -prior", swap(prior, SCORES[1::2])),
                      ("scores from -prior", swap(prior, SCORES)), ("losses from -prior", swap(prior, LOSSES)),
                      ("both from -prior", swap(prior, np.r_[SCORES, LOSSES]))]
        for name, edit in edits:
            print(f"  {name:26s} math share {[round(float(p[tgt].sum()), 2) for p in replay(history, edit)]}")

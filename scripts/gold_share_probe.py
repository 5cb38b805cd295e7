"""How the share of math-gold (concepts and reference solutions: 2.8% of the target tokens at natural shares)
within the target field moves environment v1's score, statically and in the LR decay. Replay rho 0.5 at every
step (natural shares within the source field), seeds 0 and 1, five rows; about 10 episodes of 8 segments.

    .venv/bin/python scripts/gold_share_probe.py   # audits/probes/math-cpt-v1/gold-share/{results.json,table.md}

Resumable: finished (row, seed) episodes are kept in results.json and not run again. The first row is replay
rho 0.5 itself, so its scores must equal the headroom audit's ``rho:0.5`` row on the same seeds (checked).
"""

from __future__ import annotations

import json

import numpy as np

from mixagent.domains import DomainSpace, DomainWeights
from mixagent.env.environment import MixingEnv
from mixagent.paths import REPO_ROOT, atomic_write, atomic_write_json
from mixagent.rollout.episode import rollout

OUT = REPO_ROOT / "audits/probes/math-cpt-v1/gold-share"
SEEDS = (0, 1)
RHO = 0.5
DECAY = (6, 7)  # the steps of the LR decay (the last quarter of 8)


class GoldShare:
    """Replay ``RHO``; within the target field, math-gold gets ``gold[t]`` (``None``: natural) at step ``t``."""

    def __init__(self, gold: list[float | None], natural: np.ndarray) -> None:
        self.gold, self.natural = gold, natural

    def reset(self, space: DomainSpace) -> None:
        self.space, self.t = space, 0

    def act(self, observation: np.ndarray) -> DomainWeights:
        src, tgt = self.space.field_mask("source"), self.space.field_mask("target")
        w = np.zeros(self.space.k)
        w[src] = RHO * self.natural[src] / self.natural[src].sum()
        within = self.natural[tgt] / self.natural[tgt].sum()
        g = self.gold[min(self.t, len(self.gold) - 1)]
        if g is not None:
            gold = self.space.names.index("math-gold") - int(src.sum())  # its index within the target field
            rest = np.delete(np.arange(len(within)), gold)
            within = within.copy()
            within[rest] = (1 - g) * within[rest] / within[rest].sum()
            within[gold] = g
        w[tgt] = (1 - RHO) * within
        self.t += 1
        return DomainWeights(self.space, w)


def rows(steps: int) -> dict[str, list[float | None]]:
    natural, decay = [None] * steps, set(DECAY)
    return {"natural (2.8%) at every step": natural,
            "17% at every step (static)": [0.17] * steps,
            "40% at every step (static)": [0.40] * steps,
            "natural, then 60% in the decay (steps 6-7; mean 17%)": [0.60 if t in decay else None
                                                                     for t in range(steps)],
            "40%, then natural in the decay": [None if t in decay else 0.40 for t in range(steps)]}


def main() -> None:
    env = MixingEnv(REPO_ROOT / "envs/math-cpt.yaml")
    natural = env.natural.values
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "results.json"
    done = json.loads(path.read_text()) if path.is_file() else {}
    for label, gold in rows(env.horizon).items():
        for seed in SEEDS:
            if f"{label}|{seed}" in done:
                continue
            r = rollout(env, GoldShare(gold, natural), seed)
            done[f"{label}|{seed}"] = {"balanced": r.balanced, "final": r.final,
                                       "weights": r.weights.round(6).tolist()}
            atomic_write_json(path, done)
            print(f"{label} seed {seed}: {r.balanced:+.4f}", flush=True)
    audit = REPO_ROOT / "audits/math-cpt-v1" / env.spec_.spec_hash() / "results.jsonl"
    lines = ["| math-gold share within the target field | " + " | ".join(f"seed {s}" for s in SEEDS) + " | mean |",
             "|---|" + "---:|" * (len(SEEDS) + 1)]
    for label in rows(env.horizon):
        scores = [done[f"{label}|{s}"]["balanced"] for s in SEEDS]
        lines.append(f"| {label} | " + " | ".join(f"{x:+.4f}" for x in scores) + f" | {np.mean(scores):+.4f} |")
    if audit.is_file():  # the first row is replay rho 0.5: it must be the audit's row
        key = "rho:" + ",".join(["0.5000"] * env.horizon)
        first = next(iter(rows(env.horizon)))
        for line in audit.read_text().splitlines():
            leaf = json.loads(line) if line.strip() else {}
            if leaf.get("key") == key and leaf.get("seed") in SEEDS and leaf.get("trial") is None:
                ours = done[f"{first}|{leaf['seed']}"]["final"]
                same = all(abs(ours["bpb"][n] - leaf["eval"]["bpb"][n]) < 1e-6 for n in ours["bpb"])
                lines.append(f"\nSeed {leaf['seed']}: the first row's final bits per byte "
                             f"{'equal' if same else 'DIFFER FROM'} the audit's rho 0.5 row.")
    atomic_write(OUT / "table.md", lambda tmp: tmp.write_text("\n".join(lines) + "\n"))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

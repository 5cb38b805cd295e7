"""Driving a run whose domains differ from the ones a policy was trained on, through an explicit mapping.

A trained agent acts in its own domain space (say 8 domains: 6 of the source field, 2 of the target); a
user's run has its own (say ``web`` and ``math``). :class:`DomainMapping` assigns each agent domain one
of the user's domains of the same field:

* **what the agent sees**: each agent domain reads the held-out loss of the user domain it maps to (the
  field scores are the run's), and its current weight is the user domain's weight split evenly among the
  agent domains mapped to it;
* **what the run gets**: each user domain's weight is the sum of the agent's weights of the domains mapped
  to it.

Every agent domain must be mapped and every user domain must receive at least one agent domain (else it
could never get weight); fields must agree. Anything else is a :class:`~mixagent.errors.ConfigError` that
names both lists.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mixagent.domains import DomainSpace
from mixagent.env.evaluation import EvalResult
from mixagent.errors import ConfigError, suggest

__all__ = ["DomainMapping"]


class DomainMapping:
    """``{agent domain: user domain}`` between the policy's space and the run's.

    Args:
        agent: the space the policy was trained on.
        user: the run's space.
        assign: one user domain per agent domain.

    Raises:
        ConfigError: an agent domain left unmapped, an unknown name (with a suggestion), a user domain that
            receives no agent domain, or a field mismatch.
    """

    def __init__(self, agent: DomainSpace, user: DomainSpace, assign: dict[str, str]) -> None:
        problems = []
        a_fields = dict(zip(agent.names, agent.fields))
        u_fields = dict(zip(user.names, user.fields))
        for a, u in assign.items():
            if a not in a_fields:
                problems.append(f"{a!r} is not a domain of the policy{suggest(a, a_fields)}; its domains: "
                                f"{list(agent.names)}")
            elif u not in u_fields:
                problems.append(f"{a!r} maps to {u!r}, not a domain of the run{suggest(u, u_fields)}; the run's "
                                f"domains: {list(user.names)}")
            elif a_fields[a] != u_fields[u]:
                problems.append(f"{a!r} ({a_fields[a]}) maps to {u!r} ({u_fields[u]}): map each agent domain to a "
                                f"domain of the same field")
        unmapped = [a for a in agent.names if a not in assign]
        if unmapped:
            problems.append(f"agent domains {unmapped} are not mapped: give each a domain of the run "
                            f"({dict(zip(user.names, user.fields))}) of its field")
        unused = [u for u in user.names if u not in assign.values()]
        if unused:
            problems.append(f"the run's domains {unused} receive no agent domain, so they could never get weight: "
                            f"map at least one agent domain of their field to each")
        if problems:
            raise ConfigError("policy.mapping", problems)
        self.agent, self.user, self.assign = agent, user, dict(assign)
        # M[u, a] = 1 when agent domain a maps to user domain u
        self.matrix = np.zeros((user.k, agent.k))
        for a, u in assign.items():
            self.matrix[user.index(u), agent.index(a)] = 1.0

    def to_user(self, agent_weights: np.ndarray) -> np.ndarray:
        """The run's weights: each user domain gets the sum of its agent domains' weights."""
        return self.matrix @ np.asarray(agent_weights, dtype=np.float64)

    def to_agent(self, user_weights: np.ndarray) -> np.ndarray:
        """The agent's view of the run's weights: each user domain's weight split evenly among its agent
        domains."""
        share = self.matrix / self.matrix.sum(axis=1, keepdims=True)
        return share.T @ np.asarray(user_weights, dtype=np.float64)

    def eval_to_agent(self, result: EvalResult) -> EvalResult:
        """The evaluation as the agent sees it: every agent domain has its user domain's loss."""
        bpb = {a: result.bpb[u] for a, u in ((a, self.assign[a]) for a in self.agent.names)}
        return dataclasses.replace(result, bpb=bpb, scores=dict(result.scores), accuracy=dict(result.accuracy))

    def to_json(self) -> dict:
        return {"agent": list(self.agent.names), "user": list(self.user.names), "assign": self.assign}

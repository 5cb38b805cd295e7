"""Everything a deployment run on mixagent's own corpora needs, built from config files: the base model
(pre-trained on the source field and cached), the domain data, the evaluation and the policy.

The deploy job (``data.corpora``, e.g. ``configs/deploy/cpt.yaml`` and the demo's ``cpt-2m.yaml``) and
``examples/torch_loop.py`` use it; a user with their own model and data builds the same pieces
(:class:`~mixagent.deploy.mixture.MixtureDataset`, an evaluation, a policy) directly.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

from mixagent.config import load_config
from mixagent.data.domain_data import DomainData
from mixagent.data.sources import load_space
from mixagent.data.tokenizer import token_byte_lengths
from mixagent.deploy.distributed import broadcast_array
from mixagent.deploy.heldout import HeldOutLoss
from mixagent.deploy.job_config import resolve
from mixagent.deploy.mixture import MixtureDataset
from mixagent.domains import DomainSpace, DomainWeights
from mixagent.env.base_model import BaseModel, BaseModelConfig, get_base_model
from mixagent.env.evaluation import EvalSpec, Evaluator
from mixagent.errors import ConfigError
from mixagent.policies import MixingPolicy, policy_from_spec

__all__ = ["LocalRun", "build_local_run", "text_run_pieces", "INITIAL_MIXTURES"]

log = logging.getLogger(__name__)
INITIAL_MIXTURES = ("natural", "uniform", "estimate")


@dataclasses.dataclass
class LocalRun:
    """The pieces of a run on local corpora."""

    base: BaseModel
    space: DomainSpace
    data: DomainData
    evaluator: Evaluator

    @property
    def seq_len(self) -> int:
        return self.base.model_config.seq_len

    @property
    def natural(self) -> DomainWeights:
        return DomainWeights.normalised(self.space, self.data.natural)

    def policy(self, spec: str) -> MixingPolicy:
        """``uniform``, ``natural``, ``target_only``, ``replay:<rho>`` or a policy artifact directory."""
        return policy_from_spec(spec, self.natural.to_mapping())

    def dataset(self, batch_size: int, seed: int = 0, **kwargs) -> MixtureDataset:
        return MixtureDataset.from_token_streams(self.data.train, self.space, self.seq_len, batch_size, seed=seed,
                                                 **kwargs)

    def initial(self, kind: str, model=None, samples: int = 64, seed: int = 0) -> DomainWeights:
        """The starting mixture: ``natural``, ``uniform`` or ``estimate`` (classify text sampled from
        ``model`` into the domains; the paper's start-state estimation)."""
        if kind == "natural":
            return self.natural
        if kind == "uniform":
            return DomainWeights.normalised(self.space, [1.0] * self.space.k)
        if kind != "estimate":
            raise ConfigError("initial", [f"initial mixture must be one of {INITIAL_MIXTURES}, got {kind!r}"])
        from mixagent.deploy.start_state import DomainClassifier, domain_texts, estimate_start_mixture

        tok = self.base.tokenizer
        clf = DomainClassifier.fit(domain_texts(self.data.train, tok, self.space, seed=seed), self.space, seed=seed)
        est = estimate_start_mixture(model if model is not None else self.base.model, tok, clf, n_samples=samples,
                                     max_new_tokens=min(64, self.seq_len - 1), seed=seed)
        log.info("estimated start mixture from %d samples: %s", est.n_samples, est.weights)
        # ranks sample the same texts; rank 0's estimate is made exact everywhere
        return DomainWeights(self.space, broadcast_array(est.weights.values))


def build_local_run(base_model: str | Path, space: str | Path, eval_spec: str | Path) -> LocalRun:
    """Load (pre-training when missing) the base model, the space's data and the evaluation.

    A path given as text is resolved like the deploy config's (:func:`~mixagent.deploy.job_config.resolve`:
    as given when it exists, else under the repository root); a :class:`~pathlib.Path` is used as it is (the
    deploy job passes the paths its config resolved at load).

    Args:
        base_model: base-model config YAML (``configs/base_model/*.yaml``).
        space: domain-space YAML (``configs/spaces/*.yaml``).
        eval_spec: an env spec YAML (``envs/*.yaml``) whose ``eval`` block sets the benchmarks and budget.
    """
    from mixagent.env.spec import load_spec

    base = get_base_model(load_config(BaseModelConfig, _path(base_model)))
    dspace = load_space(_path(space))
    data = DomainData(dspace, base.tokenizer, base.tokenizer_hash)
    espec: EvalSpec = load_spec(_path(eval_spec)).eval
    evaluator = Evaluator(data, espec, base.tokenizer, token_byte_lengths(base.tokenizer), base.model_config.seq_len)
    return LocalRun(base, dspace, data, evaluator)


def _path(p: str | Path) -> Path:
    return p if isinstance(p, Path) else resolve(p)


def text_run_pieces(space: DomainSpace, tokenizer, seq_len: int, batch_size: int, eval_windows: int = 4,
                    max_docs: int | None = None, eos_id: int | None = None, seed: int = 0,
                    ) -> tuple[MixtureDataset, HeldOutLoss, DomainWeights]:
    """Data, evaluation and natural mixture for a model with its own tokenizer (e.g. SmolLM2 from GGUF): each
    domain's corpora (only the passages whose id matches a domain's ``match``) are read as text through
    ``datasets`` and tokenized once; the held-out loss is in bits per token on windows of the validation
    split; the natural mixture is each domain's share of the training tokens under this tokenizer (the
    dataset starts at it).

    Args:
        space: the domain space (whole-corpus domains, or ``match`` domains: no clusters).
        tokenizer: the model's tokenizer.
        seq_len: tokens per training window (evaluation windows are one longer).
        batch_size: sequences per step per rank.
        eval_windows: held-out windows per domain.
        max_docs: read at most this many training documents per domain (quick runs).
        eos_id: document separator (default: the tokenizer's EOS).
        seed: data-order seed.
    """
    import datasets
    import numpy as np

    from mixagent.data.build import read_split
    from mixagent.deploy.mixture import HFDatasetSource

    if any(d.cluster is not None for d in space.domains):
        raise ConfigError("text_run_pieces", [f"space {space.name!r} has cluster domains; use a space of whole "
                                              f"corpora (e.g. configs/spaces/math-natural.yaml)"])

    def passages(d, split: str) -> list[str]:
        keep = re.compile(d.match).search if d.match is not None else None
        return [p["text"] for c in d.corpora for p in read_split(c, split) if keep is None or keep(p["id"])]

    sources, windows, tokens = {}, {}, []
    for i, d in enumerate(space.domains):
        train = passages(d, "train")[:max_docs]
        if not train:
            raise ConfigError(space.name, [f"domain {d.name!r} has no training passage in {d.corpora} (match "
                                           f"{d.match!r}); check the pattern against the ids in "
                                           f"data/corpora/<corpus>/train.jsonl"])
        ds = datasets.Dataset.from_dict({"text": train})
        sources[d.name] = HFDatasetSource(ds, seq_len, tokenizer=tokenizer, eos_id=eos_id, seed=seed + i)
        tokens.append(sum(len(x) + 1 for x in sources[d.name].dataset["input_ids"]))  # documents + separators
        val_src = HFDatasetSource(datasets.Dataset.from_dict({"text": passages(d, "val")}), seq_len + 1,
                                  tokenizer=tokenizer, eos_id=eos_id, seed=0)
        windows[d.name] = np.stack([w for _, w in zip(range(eval_windows), val_src.windows(0))])
    natural = DomainWeights.normalised(space, np.asarray(tokens, dtype=np.float64))
    return MixtureDataset(sources, space, batch_size, seed=seed, initial=natural), HeldOutLoss(windows, space), natural

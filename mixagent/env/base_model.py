"""``make base-model`` (``mixagent base-model``): pre-train the proxy on the source field at its
natural proportions and cache the checkpoint (safetensors + meta.json with its sha256) by config hash."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mixagent.config import config_hash, load_config, to_dict
from mixagent.data.tokenizer import TokenizerConfig, get_tokenizer, tokenizer_dir
from mixagent.domains import Domain, DomainSpace
from mixagent.env.lm import ProxyModelConfig, build_model, count_parameters, resolve_size
from mixagent.env.proxy import OptimConfig, make_optimizer, train_segment
from mixagent.errors import CorruptArtifactError, MixagentError
from mixagent.paths import CONFIGS_DIR, REPO_ROOT, data_root, staged_dir
from mixagent.sampling import MixtureSampler

__all__ = ["BaseModelConfig", "BaseModel", "get_base_model", "commit_base_model", "committed_dir", "SOURCE_CORPORA",
           "COMMITTED_BASE_DIR"]

log = logging.getLogger(__name__)
COMMITTED_BASE_DIR = REPO_ROOT / "checkpoints" / "base"  # base checkpoints that reference datasets start from
SOURCE_CORPORA = ("wiki", "news", "fiction", "politics", "foldoc", "gcide", "wordnet")


@dataclasses.dataclass(frozen=True)
class BaseModelConfig:
    """Args:
        size: proxy size, one of ``mixagent.env.lm.MODEL_SIZES`` (``0.5m``, ``2m``, ``8m``).
        seq_len: context length.
        corpora: source-field corpora, mixed at their natural token shares.
        tokens: pre-training tokens.
        seed: initialisation and data-order seed.
        tokenizer: the tokenizer to train/load.
        optim: optimizer and batch settings.
        target_corpora: target-field corpora mixed into pre-training (a base that has seen a little of the
            target field, so continual pre-training refines rather than introduces it).
        target_share: share of pre-training tokens drawn from ``target_corpora`` (natural shares among
            them); the source corpora share the rest at their natural proportions.
    """

    size: str = "0.5m"
    seq_len: int = 128
    corpora: tuple[str, ...] = SOURCE_CORPORA
    tokens: int = 3_000_000
    seed: int = 0
    tokenizer: TokenizerConfig = dataclasses.field(default_factory=TokenizerConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    target_corpora: tuple[str, ...] = ()
    target_share: float = 0.0

    ADDED_FIELDS = ("target_corpora", "target_share")

    def check(self) -> list[str]:
        from mixagent.data.sources import unknown_corpora
        from mixagent.env.lm import MODEL_SIZES
        from mixagent.errors import suggest

        problems = [] if self.tokens > 0 and self.seq_len >= 8 else ["tokens must be > 0 and seq_len >= 8"]
        if not 0 <= self.target_share < 1:
            problems.append(f"target_share must be in [0, 1), got {self.target_share}")
        elif self.target_share > 0 and not self.target_corpora:
            problems.append("target_share > 0 needs target_corpora, e.g. target_corpora: [math]")
        elif self.target_corpora and self.target_share == 0:
            problems.append("target_corpora without a target_share would change the cache key but not the model; "
                            "set target_share (e.g. 0.03) or drop target_corpora")
        if set(self.target_corpora) & set(self.corpora):
            problems.append(f"corpora {sorted(set(self.target_corpora) & set(self.corpora))} are listed both as "
                            f"source (corpora) and as target (target_corpora)")
        problems += unknown_corpora(self.target_corpora)
        if self.size not in MODEL_SIZES:
            problems.append(f"size {self.size!r} unknown{suggest(self.size, MODEL_SIZES)}; "
                            f"known: {', '.join(MODEL_SIZES)}")
        return problems + unknown_corpora(self.corpora)

    def model_config(self, vocab_size: int) -> ProxyModelConfig:
        return dataclasses.replace(resolve_size(self.size), seq_len=self.seq_len, vocab_size=vocab_size)


@dataclasses.dataclass
class BaseModel:
    """A loaded base checkpoint."""

    model: torch.nn.Module
    model_config: ProxyModelConfig
    tokenizer: object
    tokenizer_hash: str
    meta: dict
    path: Path

    @property
    def base_id(self) -> str:
        """``<config hash>:<checkpoint sha256[:16]>``: what reference runs and audits record as their base."""
        return f"{self.path.name}:{self.meta['sha256'][:16]}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def base_dir(cfg: BaseModelConfig, root: Path | None = None) -> Path:
    root = root or data_root()
    return root / "cache" / "base" / config_hash(to_dict(cfg), tokenizer_dir(cfg.tokenizer, root).name)


def _load(path: Path, cfg: BaseModelConfig, tokenizer, tok_hash: str) -> BaseModel:
    from safetensors.torch import load_model

    meta_path, weights = path / "meta.json", path / "model.safetensors"
    try:
        meta = json.loads(meta_path.read_text())
        expected = meta["sha256"]
    except (OSError, ValueError, KeyError) as exc:
        raise CorruptArtifactError(f"base model meta {meta_path} is unreadable ({exc}); rebuild it with "
                                   f"`make base-model` (runs mixagent base-model --rebuild)") from None
    if not weights.exists() or _sha256(weights) != expected:
        raise CorruptArtifactError(f"base model {weights} does not match the sha256 in {meta_path}; it is corrupt "
                                   f"or was modified. Rebuild it with `make base-model` "
                                   f"(mixagent base-model --rebuild)")
    mcfg = cfg.model_config(len(tokenizer))
    model = build_model(mcfg)
    load_model(model, str(weights))
    return BaseModel(model, mcfg, tokenizer, tok_hash, meta, path)


def committed_dir(cfg: BaseModelConfig, root: Path | None = None, committed: Path | None = None) -> Path:
    """Where a committed copy of this base checkpoint lives in the repository (``checkpoints/base/<name>``,
    the same name as its cache directory)."""
    return (committed or COMMITTED_BASE_DIR) / base_dir(cfg, root).name


def _adopt_committed(cfg: BaseModelConfig, root: Path, path: Path, committed: Path | None) -> None:
    """Copy a committed checkpoint into the cache (verified first), so a trajectory dataset collected from
    it starts from the same weights on any machine: float results differ between CPU kinds, so a base
    re-trained here need not match it.

    Raises:
        CorruptArtifactError: the committed copy fails its sha256, or was trained with another tokenizer.
    """
    src = committed_dir(cfg, root, committed)
    if not (src / "meta.json").exists():
        return
    meta = json.loads((src / "meta.json").read_text())
    if _sha256(src / "model.safetensors") != meta.get("sha256"):
        raise CorruptArtifactError(f"committed base model {src / 'model.safetensors'} does not match the sha256 in "
                                   f"its meta.json; restore it from git (git checkout -- {src})")
    tok_meta = json.loads((tokenizer_dir(cfg.tokenizer, root) / "meta.json").read_text())
    if meta.get("tokenizer_file_hash") not in (None, tok_meta.get("file_hash")):
        raise CorruptArtifactError(f"committed base model {src} was trained with tokenizer "
                                   f"{meta['tokenizer_file_hash']}, this machine built {tok_meta.get('file_hash')}; "
                                   f"rebuild the data with the package versions in data/corpora/BUILD.json")
    with staged_dir(path) as tmp:
        shutil.copy2(src / "model.safetensors", tmp / "model.safetensors")
        (tmp / "meta.json").write_text(json.dumps({**meta, "adopted_from": str(src)}, indent=2))
    log.info("base model adopted from the committed copy %s", src)


def commit_base_model(cfg: BaseModelConfig, root: Path | None = None, committed: Path | None = None) -> Path:
    """Copy the cached checkpoint of ``cfg`` into the repository's ``checkpoints/base/`` (with its
    tokenizer's content hash), for datasets collected from it; returns the directory."""
    root = root or data_root()
    base = get_base_model(cfg, root)
    tok_meta = json.loads((tokenizer_dir(cfg.tokenizer, root) / "meta.json").read_text())
    out = committed_dir(cfg, root, committed)
    if not (out / "meta.json").exists():
        with staged_dir(out) as tmp:
            shutil.copy2(base.path / "model.safetensors", tmp / "model.safetensors")
            meta = {k: v for k, v in base.meta.items() if k != "adopted_from"}
            (tmp / "meta.json").write_text(json.dumps({**meta, "tokenizer_file_hash": tok_meta["file_hash"]},
                                                      indent=2))
    return out


def get_base_model(cfg: BaseModelConfig, root: Path | None = None, rebuild_corrupt: bool = False,
                   committed: Path | None = None) -> BaseModel:
    """Load the cached base model; when missing, adopt a committed copy (``checkpoints/base/``, verified),
    else pre-train it.

    A checkpoint that fails its hash check raises :class:`CorruptArtifactError` — unless
    ``rebuild_corrupt`` is set, when it is discarded and trained again. It is never silently used.
    """
    root = root or data_root()
    tokenizer = get_tokenizer(cfg.tokenizer, root)
    tok_hash = tokenizer_dir(cfg.tokenizer, root).name
    path = base_dir(cfg, root)
    if not (path / "meta.json").exists() and not (path / "model.safetensors").exists():
        _adopt_committed(cfg, root, path, committed)
    if (path / "meta.json").exists() or (path / "model.safetensors").exists():
        try:
            return _load(path, cfg, tokenizer, tok_hash)
        except CorruptArtifactError:
            if not rebuild_corrupt:
                raise
            log.warning("base model in %s is corrupt; rebuilding", path)
            shutil.rmtree(path)
    return _pretrain(cfg, root, tokenizer, tok_hash, path)


def _pretrain(cfg: BaseModelConfig, root: Path, tokenizer, tok_hash: str, path: Path) -> BaseModel:
    from safetensors.torch import save_model

    from mixagent.data.domain_data import DomainData

    target = list(cfg.target_corpora) if cfg.target_share > 0 else []
    domains = [Domain(c, "source", [c]) for c in cfg.corpora] + [Domain(c, "target", [c]) for c in target]
    space = DomainSpace("base-source", domains, fields=("source", "target") if target else ("source",))
    data = DomainData(space, tokenizer, tok_hash, root)
    mcfg = cfg.model_config(len(tokenizer))
    model = build_model(mcfg, seed=cfg.seed)
    opt = make_optimizer(model, cfg.optim)
    sampler = MixtureSampler(data.train, mcfg.seq_len + 1, seed=cfg.seed, names=space.names)
    shares = data.natural
    if target:  # the source corpora at natural proportions, the target corpora at target_share in all
        is_target = space.field_mask("target")
        shares = np.where(is_target, cfg.target_share, 1 - cfg.target_share) * shares / np.where(
            is_target, shares[is_target].sum(), shares[~is_target].sum())
    total = max(1, cfg.tokens // (cfg.optim.micro_batch * mcfg.seq_len))
    chunk = max(1, min(50, total // 20))
    log.info("pre-training base model %s (%d params) on %s for %d steps", cfg.size, count_parameters(model),
             "+".join(cfg.corpora) + (f" + {cfg.target_share:.0%} {'+'.join(target)}" if target else ""), total)
    t0, done, losses = time.time(), 0, []
    with tqdm(total=total * cfg.optim.micro_batch * mcfg.seq_len, desc="base model", unit="tok",
              unit_scale=True) as bar:
        while done < total:
            n = min(chunk, total - done)
            stats = train_segment(model, opt, sampler, shares, n, done, total, cfg.optim)
            if stats.nonfinite:
                raise MixagentError(f"base-model pre-training diverged (NaN/Inf loss) at step {done + stats.steps}; "
                                    f"lower optim.lr (now {cfg.optim.lr})")
            done += n
            losses.append(stats.mean_loss)
            bar.update(stats.tokens)
            bar.set_postfix(loss=f"{stats.mean_loss:.3f}")
    with staged_dir(path) as tmp:
        save_model(model, str(tmp / "model.safetensors"))
        meta = {"config": to_dict(cfg), "model_config": dataclasses.asdict(mcfg),
                "parameters": count_parameters(model), "target_share": cfg.target_share,
                "target_corpora": target, "tokenizer_hash": tok_hash,
                "tokens": total * cfg.optim.micro_batch * mcfg.seq_len, "final_loss": losses[-1],
                "seconds": round(time.time() - t0, 1), "sha256": _sha256(tmp / "model.safetensors"),
                "torch": torch.__version__}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    log.info("base model saved to %s (loss %.3f, %.0fs)", path, losses[-1], time.time() - t0)
    return BaseModel(model, mcfg, tokenizer, tok_hash, meta, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mixagent base-model", description=__doc__)
    parser.add_argument("--config", default=str(CONFIGS_DIR / "base_model/default.yaml"))
    parser.add_argument("--rebuild", action="store_true", help="rebuild a checkpoint that fails its hash check")
    parser.add_argument("--commit", action="store_true",
                        help="also copy the checkpoint into checkpoints/base/ (for a committed reference dataset)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. tokens=1000000")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(BaseModelConfig, args.config, args.overrides)
        base = get_base_model(cfg, rebuild_corrupt=args.rebuild)
        if args.commit:
            print(f"committed copy: {commit_base_model(cfg)}")
    except MixagentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    m = base.meta
    print(f"base model {cfg.size}: {m['parameters']:,} params, {m['tokens']:,} tokens, final loss "
          f"{m['final_loss']:.3f}, {m['seconds']}s -> {base.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

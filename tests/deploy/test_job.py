"""The deploy job (``python -m mixagent.deploy``): the user-style config over a jsonl dataset with a domain
column runs end to end at tiny scale (a model built from config, its own tokenizer), resumes, maps an
agent of another domain space onto the run's domains, and refuses bad requests with typed errors before
the model loads, leaving nothing on disk."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mixagent.config import load_config
from mixagent.deploy.job import run_deploy
from mixagent.deploy.job_config import DeployConfig
from mixagent.deploy.mapping import DomainMapping
from mixagent.domains import Domain, DomainSpace
from mixagent.env.evaluation import EvalResult
from mixagent.errors import ConfigError, CorruptArtifactError, DataMissingError, UsageError
from mixagent.paths import CONFIGS_DIR
from mixagent.policies.artifact import ArtifactMismatchError, random_artifact

USER = CONFIGS_DIR / "deploy/user-jsonl.yaml"
FIX = "tests/fixtures/deploy"


def cfg(tmp_path, *overrides: str, name: str = "run") -> DeployConfig:
    return load_config(DeployConfig, USER, [f"trainer.output_dir={tmp_path / name}", "trainer.max_steps=12",
                                            "trainer.save_steps=6", "policy.every=4", *overrides])


@pytest.fixture(scope="module")
def odm_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deploy")
    return tmp, run_deploy(cfg(tmp, "policy.spec=odm"), progress=False)


def test_user_jsonl_config_runs_end_to_end(odm_run):
    tmp, report = odm_run
    out = tmp / "run"
    assert report["domains"] == ["web", "books", "math"] and report["fields"] == ["source", "source", "target"]
    hist = report["history"]
    assert [round(h["progress"] * 12) for h in hist] == [0, 4, 8]  # a decision every 4 of the 12 steps
    w = np.array([h["weights"] for h in hist])
    assert np.allclose(w.sum(1), 1) and (w > 0).all()
    assert not np.allclose(w[0], w[-1])  # ODM moved the mixture
    start, final = EvalResult.from_json(report["start"]), EvalResult.from_json(report["final"])
    assert start.unit == "byte"  # the fixture's tokenizer is byte-level BPE
    assert all(final.bpb[d] < start.bpb[d] for d in report["domains"])  # 12 steps of training lowered every loss
    assert [e["step"] for e in report["train_loss"]] == [10]
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["final"] == report["final"]
    assert {"report.md", "mixture.png", "heldout.png", "deploy.json", "checkpoint-6", "checkpoint-12"} <= {
        p.name for p in out.iterdir()}
    md = (out / "report.md").read_text()
    assert "| math | target |" in md and "![mixture.png](mixture.png)" in md


def test_a_stopped_run_resumes_exactly(odm_run, tmp_path):
    import shutil

    tmp, report = odm_run
    with pytest.raises(UsageError, match="holds this run's checkpoints: resume=true"):
        run_deploy(cfg(tmp, "policy.spec=odm"), progress=False)
    shutil.copytree(tmp / "run", tmp_path / "run")  # the same run, stopped after its checkpoint at step 6
    shutil.rmtree(tmp_path / "run" / "checkpoint-12")
    resumed = run_deploy(cfg(tmp_path, "policy.spec=odm", "resume=true"), progress=False)
    assert resumed["history"] == report["history"]  # the same decisions, from the same evaluations
    n = len(resumed["batches_sha256"])
    assert n >= 6 and resumed["batches_sha256"][-6:] == report["batches_sha256"][-6:]  # the same samples
    assert resumed["final"] == report["final"]  # and the same model at the end
    longer = run_deploy(cfg(tmp_path, "policy.spec=odm", "trainer.max_steps=16", "resume=true"), progress=False)
    assert longer["history"][:3] == report["history"]  # extending the finished run keeps its decisions
    assert len(longer["history"]) == 4 and round(longer["history"][3]["progress"] * 16) == 12
    from mixagent.deploy.report import decision_steps

    assert decision_steps(longer) == [0, 4, 8, 12]  # the plots place every decision at its real step


def test_an_agent_of_another_space_drives_the_run_through_a_mapping(tmp_path):
    agent = DomainSpace("agent", [Domain("wiki", "source", ["wiki"]), Domain("news", "source", ["news"]),
                                  Domain("fiction", "source", ["fiction"]), Domain("math", "target", ["math"])])
    art = random_artifact(tmp_path / "agent", agent)
    with pytest.raises(ArtifactMismatchError, match="give policy.mapping") as err:
        run_deploy(cfg(tmp_path, f"policy.spec={art}"), progress=False)
    assert "'news': 'source'" in str(err.value) and "'books': 'source'" in str(err.value)
    assert not (tmp_path / "run").exists()  # refused before the model loaded: nothing written
    report = run_deploy(cfg(tmp_path, f"policy.spec={art}", "trainer.max_steps=8", "policy.ood=warn",  # no ranges
                            "policy.mapping={wiki: web, news: web, fiction: books, math: math}"), progress=False)
    assert report["mapping"]["assign"]["news"] == "web"
    w = np.array([h["weights"] for h in report["history"]])
    assert w.shape == (2, 3) and np.allclose(w.sum(1), 1)
    assert all(h["fallback"] is None for h in report["history"])  # the agent's 4 weights became the run's 3


def test_a_per_domain_policy_drives_the_users_domains_directly(tmp_path):
    """The first route to the user's domains: the domain-count-invariant (per-domain) policy needs no mapping (and a
    mapping given for it is refused); it reads the learning rate it was trained to observe."""
    import torch

    from mixagent.policies.per_domain import PerDomainNet, write_per_domain_artifact

    torch.manual_seed(0)
    art = write_per_domain_artifact(tmp_path / "pd", PerDomainNet(8), {"action": {"temperature": 0.25, "floor": 0.0}},
                                    observe_lr=True)
    with pytest.raises(ConfigError, match="per-domain policy that drives any domain space"):
        run_deploy(cfg(tmp_path, f"policy.spec={art}", "policy.mapping={wiki: web}"), progress=False)
    assert not (tmp_path / "run").exists()
    report = run_deploy(cfg(tmp_path, f"policy.spec={art}", "trainer.max_steps=8", "policy.ood=warn"),  # no ranges
                        progress=False)
    assert report["mapping"] is None and report["domains"] == ["web", "books", "math"]
    w = np.array([h["weights"] for h in report["history"]])
    assert w.shape == (2, 3) and np.allclose(w.sum(1), 1) and not np.allclose(w[0], w[1])
    assert all(h["fallback"] is None for h in report["history"])
    assert report["ood"]["mode"] == "warn" and not report["ood"]["checked"]  # no ranges: acted on unchecked
    assert "Out-of-range guard (`ood: warn`" in (tmp_path / "run" / "report.md").read_text()
    lrs = [h["lr"] for h in report["history"]]  # the report keeps what the policy saw
    assert all(0 <= lr <= 1 for lr in lrs) and lrs[0] != lrs[1]  # 0 at the first step of the warmup


def test_a_saved_hugging_face_model_directory_is_trained(tmp_path):
    import shutil

    from transformers import AutoConfig, AutoModelForCausalLM

    model_dir = tmp_path / "my-model"
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(FIX + "/tiny-llama")).save_pretrained(model_dir)
    for f in (CONFIGS_DIR.parent / FIX / "tokenizer").iterdir():  # the tokenizer saved beside the weights
        shutil.copy(f, model_dir / f.name)
    report = run_deploy(cfg(tmp_path, "model.kind=hf", f"model.path={model_dir}", "model.tokenizer=",
                            "trainer.max_steps=4", "trainer.save_steps=0"), progress=False)
    assert report["model"]["name"] == "my-model" and report["model"]["parameters"] == 37024
    assert report["final"]["bpb"]["math"] < report["start"]["bpb"]["math"]


@pytest.mark.parametrize("name", ["user-jsonl", "cpt-2m", "cpt", "smollm2-text"])
def test_shipped_deploy_configs_are_valid(name):
    c = load_config(DeployConfig, CONFIGS_DIR / f"deploy/{name}.yaml")
    assert c.name == name and c.trainer["max_steps"] > 0


def test_domain_mapping_sums_splits_and_checks():
    agent = DomainSpace("a", [Domain("wiki", "source", ["w"]), Domain("news", "source", ["n"]),
                              Domain("math", "target", ["m"])])
    user = DomainSpace("u", [Domain("web", "source", ["w"]), Domain("algebra", "target", ["a"])])
    m = DomainMapping(agent, user, {"wiki": "web", "news": "web", "math": "algebra"})
    assert m.to_user(np.array([0.2, 0.3, 0.5])).tolist() == [0.5, 0.5]
    assert m.to_agent(np.array([0.6, 0.4])).tolist() == [0.3, 0.3, 0.4]
    ev = m.eval_to_agent(EvalResult({"web": 2.0, "algebra": 3.0}, {"source": 0.1, "target": 0.2}, {}))
    assert ev.bpb == {"wiki": 2.0, "news": 2.0, "math": 3.0} and ev.scores == {"source": 0.1, "target": 0.2}
    with pytest.raises(ConfigError) as err:
        DomainMapping(agent, user, {"wiki": "web", "math": "web", "newz": "web"})
    text = str(err.value)
    assert "did you mean 'news'" in text and "'math' (target) maps to 'web' (source)" in text
    assert "['news'] are not mapped" in text and "['algebra'] receive no agent domain" in text


@pytest.mark.parametrize("overrides, error, match", [
    (["policy.fallback=bogus"], ConfigError, "policy.fallback must be one of"),
    (["policy.max_change=-1"], ConfigError, r"policy.max_change must be in \(0, 1\]"),
    (["policy.floor=0.6"], ConfigError, "floor \\* K must stay below 1"),
    (["eval.batch_size=0"], ConfigError, "eval.batch_size must be >= 1"),
    (["trainer.gradient_accumulation_steps=0"], ConfigError, "gradient_accumulation_steps must be an integer >= 1"),
    (["trainer.per_device_train_batch_size=0"], ConfigError, "per_device_train_batch_size must be an integer"),
    (["trainer.output_dir=README.md"], ConfigError, "is a file: give a directory"),
    (["data.files=[]", "data.domains={web: {field: source, files: [tests/fixtures/deploy/train.jsonl]}, "
      "math: {field: target, files: [tests/fixtures/deploy/train.jsonl]}}"], ConfigError,
     "held_out_files holds rows with a 'domain' column"),
    (["data.text_column=body"], ConfigError, "no text column 'body'.*set data.text_column"),
    (["data.domain_column=source"], ConfigError, "no domain column 'source'"),
    (["data.held_out_files=[]"], ConfigError, "no held-out data: give held_out_files"),
    (["data.seq_len=100000"], DataMissingError, "fewer than one window of 100000"),
    (["data.domains={web: {field: source}, books: {field: source}, math: {field: target}, code: {field: target}}"],
     DataMissingError, "\\['code'\\] have no training rows"),
    (["policy.spec=uniformm"], ConfigError, "did you mean 'uniform'"),
    (["policy.spec=aioli:eta=2"], ConfigError, "learns from probe trainings inside each step"),
    (["policy.spec=doremi:etta=2"], ConfigError, "doremi has no hyperparameter 'etta' \\(did you mean 'eta'"),
    (["policy.spec=configs/deploy"], CorruptArtifactError, "not a policy artifact directory \\(it has no meta.json"),
    (["trainer.max_stepz=5"], ConfigError, "not a TrainingArguments field \\(did you mean 'max_steps'"),
    (["trainer.bf16=true"], ConfigError, "set by the job: use model.dtype"),
    (["model.kind=hf"], ConfigError, "holds a config but no weights.*use kind hf_config"),
    (["model.kind=hf", "model.path=tests/fixtures/deploy"], ConfigError, "holds no config.json"),
    (["model.device=cuda"], ConfigError, "no CUDA device"),
    (["policy.initial=estimate"], ConfigError, "policy.initial estimate .* needs data.corpora and model.kind base"),
    (["policy.initial=natral"], ConfigError, "did you mean 'natural'"),
    (["report=tests"], ConfigError, "report 'tests' is a directory: give a file name"),
])
def test_bad_requests_are_typed_errors_before_anything_is_written(tmp_path, overrides, error, match):
    if "model.device=cuda" in overrides:
        pytest.importorskip("torch")
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    with pytest.raises(error, match=match):
        run_deploy(cfg(tmp_path, *overrides), progress=False)
    assert not (tmp_path / "run").exists()


def test_rows_of_an_unlisted_domain_are_refused(tmp_path):
    rows = (CONFIGS_DIR.parent / FIX / "train.jsonl").read_text()
    (tmp_path / "train.jsonl").write_text(rows + json.dumps({"domain": "poetry", "text": "a rose"}) + "\n")
    with pytest.raises(ConfigError, match="rows of domains \\['poetry'\\] that data.domains does not list"):
        run_deploy(cfg(tmp_path, f"data.files=[{tmp_path / 'train.jsonl'}]"), progress=False)
    assert not (tmp_path / "run").exists()


def test_bf16_on_a_cpu_without_it_and_another_runs_output_dir(odm_run, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    with pytest.raises(ConfigError, match="bf16 was asked for but this CPU lacks bfloat16 support"):
        run_deploy(cfg(tmp_path, "model.dtype=bf16", "model.device=cpu"), progress=False)
    monkeypatch.undo()
    tmp, _ = odm_run
    with pytest.raises(UsageError, match="holds another run's state \\(it differs in \\['policy'\\]\\)"):
        run_deploy(cfg(tmp, "policy.spec=uniform", "resume=true"), progress=False)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "model.safetensors").write_text("x")
    with pytest.raises(UsageError, match="holds files not written by a deploy job"):
        run_deploy(cfg(tmp_path, name="foreign"), progress=False)
    with pytest.raises(UsageError, match="holds no run to resume"):
        run_deploy(cfg(tmp_path, "resume=true", name="empty"), progress=False)


def test_cli_runs_the_job_and_reports_config_errors(tmp_path, capsys):
    from mixagent.deploy.__main__ import main

    assert main(["--config", str(USER), "--no-progress", f"trainer.output_dir={tmp_path / 'cli'}",
                 "trainer.max_steps=4", "policy.every=2", "modle.kind=hf"]) == 2
    assert "did you mean 'model'" in capsys.readouterr().err
    assert main(["--config", str(USER), "--no-progress", f"trainer.output_dir={tmp_path / 'cli'}",
                 "trainer.max_steps=4", "policy.every=2", "trainer.save_steps=0"]) == 0
    assert (tmp_path / "cli" / "report.md").is_file()


def test_wandb_asked_through_report_to_logs_offline_under_the_run(tmp_path, monkeypatch):
    import wandb

    for var in ("WANDB_MODE", "WANDB_DIR"):  # recorded, so what the job sets is undone after the test
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    wandb.setup()  # this process set wandb up before the job (with no mode): the job's offline mode still holds
    run_deploy(cfg(tmp_path, "trainer.max_steps=4", "policy.every=2", "trainer.save_steps=0",
                   "trainer.report_to=[wandb]"), progress=False)
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))
    assert wandb.run is None  # the job closed its run: a second job in this process starts its own


@pytest.mark.slow
def test_gpu_check_smoke_runs_its_checks_on_cpu(tmp_path):
    """benchmarks/gpu_check.py's logic at tiny scale on CPU: a stop-and-resume that matches the straight run
    decision for decision and batch for batch, the overhead baseline without the callback, the proxy env."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", CONFIGS_DIR.parent / "benchmarks/gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--smoke", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["resume"] == {"decisions_equal": True, "batches_equal": True, "final_bpb_max_abs_diff": 0.0}
    assert result["weights_changed"] and result["step_seconds"]["without_callback"] > 0
    judge = result["judge"]  # the judge ran in the short judged run: its validity, cost and end scores
    assert set(judge["validity"]) == set(judge["final"]) == {"source", "target"}
    assert judge["judged_evals"] >= 2 and judge["seconds_per_judged_eval"] > 0


# ---- paths resolved once, at load -------------------------------------------------------------------------
def test_paths_are_resolved_once_at_load_and_the_job_reads_the_resolved_paths(tmp_path, monkeypatch):
    """Every path of the config is resolved exactly once, when it is built; the run reads the absolute
    ``Path`` objects of the ``resolved`` views, while ``to_dict`` (and so every hash) keeps the YAML's text."""
    from collections import Counter
    from pathlib import Path

    import mixagent.deploy.job as job
    import mixagent.deploy.job_config as job_config
    import mixagent.deploy.local as local
    import mixagent.deploy.user_data as user_data
    from mixagent.config import to_dict

    calls: Counter = Counter()
    real = job_config.resolve

    def counting(path):
        calls[str(path)] += 1
        return real(path)

    for module in (job_config, job, user_data, local):  # wherever a path could be resolved again
        monkeypatch.setattr(module, "resolve", counting, raising=False)
    c = cfg(tmp_path, "trainer.max_steps=2", "policy.every=1", "trainer.save_steps=0")
    loaded = dict(calls)
    assert {f"{FIX}/tiny-llama", f"{FIX}/tokenizer", f"{FIX}/train.jsonl", f"{FIX}/held_out.jsonl",
            str(tmp_path / "run")} <= set(loaded)
    paths = [c.model.resolved.path, c.model.resolved.tokenizer, *c.data.resolved.files,
             *c.data.resolved.held_out_files, c.eval.resolved.env, c.output_dir]
    assert all(isinstance(p, Path) and p.is_absolute() for p in paths)
    assert c.model.resolved.path == CONFIGS_DIR.parent / FIX / "tiny-llama" and c.output_dir == tmp_path / "run"
    d = to_dict(c)  # the YAML's text, as written
    assert d["model"]["path"] == f"{FIX}/tiny-llama" and d["data"]["files"] == [f"{FIX}/train.jsonl"]
    assert "resolved" not in d["model"] and "report" not in d  # an unset added field keeps old hashes
    run_deploy(c, progress=False)
    assert dict(calls) == loaded  # the run resolved nothing again
    assert set(calls.values()) == {1}, calls  # and the load resolved each path once


def test_shipped_configs_keep_their_yaml_values_and_hash():
    """The resolved views add no field: to_dict is the YAML's values, so run identities and the committed
    deploy cases' hash are unchanged."""
    from mixagent.config import config_hash, load_yaml, to_dict
    from mixagent.deploy.job import _identity
    from mixagent.study.deploy_case import deploy_case_hash

    c = load_config(DeployConfig, CONFIGS_DIR / "deploy/cpt-2m.yaml")
    raw = load_yaml(CONFIGS_DIR / "deploy/cpt-2m.yaml")
    d = to_dict(c)
    assert {k: d["model"][k] for k in raw["model"]} == raw["model"] and d["data"]["corpora"] == raw["data"]["corpora"]
    assert config_hash(_identity(c)) == "a8c270bbc4537d23"  # what deploy.json of runs made before records
    committed = json.loads((CONFIGS_DIR.parent / "audits/compare/v1-trainer-2m/table.json").read_text())
    assert deploy_case_hash("configs/deploy/cpt-2m.yaml", ()) == committed["spec_hash"]


# ---- the legacy alias python -m mixagent.deploy.cpt ---------------------------------------------------------
CPT = CONFIGS_DIR / "deploy/cpt.yaml"


def test_the_legacy_cpt_alias_maps_its_flags_onto_the_yaml_jobs_config(tmp_path, monkeypatch, capsys):
    import mixagent.deploy.job as job
    from mixagent.config import to_dict
    from mixagent.deploy import cpt

    seen: list[DeployConfig] = []
    monkeypatch.setattr(job, "run_deploy", lambda c, progress=True: seen.append(c) or {})
    flags = ["--policy", "uniform", "--base", "configs/base_model/tiny.yaml", "--space", "configs/spaces/tiny.yaml",
             "--env", "envs/tiny.yaml", "--initial", "uniform", "--steps", "60", "--every", "4", "--batch", "4",
             "--lr", "1e-5", "--floor", "0.01", "--max-change", "0.5", "--workers", "1", "--seed", "3",
             "--save-steps", "20", "--out", str(tmp_path / "o"), "--report", str(tmp_path / "r.json"),
             "--model", "gguf-smollm2", "--seq-len", "64", "--max-docs", "10", "--wandb", "offline"]
    assert cpt.main(flags) == 0
    yaml_job = load_config(DeployConfig, CPT, [
        "policy.spec=uniform", "model.path=configs/base_model/tiny.yaml", "data.corpora=configs/spaces/tiny.yaml",
        "eval.env=envs/tiny.yaml", "policy.initial=uniform", "trainer.max_steps=60", "trainer.warmup_steps=3",
        "policy.every=4", "trainer.per_device_train_batch_size=4", "trainer.learning_rate=1.0e-5", "policy.floor=0.01",
        "policy.max_change=0.5", "trainer.dataloader_num_workers=1", "seed=3", "trainer.save_steps=20",
        f"trainer.output_dir={tmp_path / 'o'}", f"report={tmp_path / 'r.json'}", "model.kind=smollm2_gguf",
        "eval.kind=held_out", "data.eval_windows=4", "data.seq_len=64", "data.max_docs=10", "wandb=offline"])
    (alias,) = seen
    assert to_dict(alias) == to_dict(yaml_job) and alias.resolved == yaml_job.resolved
    assert alias.trainer["learning_rate"] == 1e-5 and alias.model.kind == "smollm2_gguf"  # a float, not "1e-05"
    assert "legacy alias; running: python -m mixagent.deploy --config configs/deploy/cpt.yaml policy.spec=uniform" \
        in capsys.readouterr().err
    # no flag: the config as shipped (the old script's defaults), in the old default directory
    assert cpt.main([]) == 0
    plain = load_config(DeployConfig, CPT)
    legacy_out = {"output_dir": "runs/deploy/hf_cpt/2m-replay0.5"}
    assert to_dict(seen[1]) == to_dict(plain) | {"trainer": plain.trainer | legacy_out}
    assert seen[1].trainer["max_steps"] == 200 and seen[1].trainer["warmup_steps"] == 10 and seen[1].policy.every == 25
    # a bad combination is the YAML job's typed error (the script exited with a bare message)
    assert cpt.main(["--model", "gguf-smollm2", "--initial", "estimate"]) == 2
    assert "policy.initial estimate classifies text sampled from the model" in capsys.readouterr().err
    assert len(seen) == 2


def test_the_legacy_cpt_alias_runs_the_yaml_job(tmp_path):
    """A tiny seeded run through the alias: mixagent's corpora, a base model, the benchmarks, a start mixture
    estimated from the model (``policy.initial=estimate``) and ``--report``."""
    from mixagent.deploy import cpt

    out, copy = tmp_path / "o", tmp_path / "r.json"
    assert cpt.main(["--base", "configs/base_model/tiny.yaml", "--space", "configs/spaces/tiny.yaml", "--env",
                     "envs/tiny.yaml", "--batch", "4", "--steps", "4", "--every", "2", "--initial", "estimate",
                     "--out", str(out), "--report", str(copy)]) == 0
    report = json.loads(copy.read_text())
    assert report == json.loads((out / "report.json").read_text()) and (out / "report.md").is_file()
    assert report["model"]["name"] == "tiny" and report["steps"] == 4 and len(report["history"]) == 2
    assert report["domains"] == ["wiki", "news", "fiction", "math"]
    assert set(report["start"]["scores"]) == {"source", "target"}  # scored on the env's benchmarks
    assert json.loads((out / "deploy.json").read_text())["config"]["policy"]["initial"] == "estimate"


def test_a_model_with_its_own_tokenizer_on_mixagents_corpora(tmp_path, monkeypatch):
    """What ``--model gguf-smollm2`` maps to (``model.kind=smollm2_gguf eval.kind=held_out`` on
    ``data.corpora``), with the fixture's tiny model standing in for SmolLM2: passages are kept by each
    domain's ``match``, the natural mixture is the token shares under the model's tokenizer, and the
    held-out loss is per token."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    import mixagent.env.gguf as gguf
    from mixagent.data.sources import load_space
    from mixagent.deploy import cpt
    from mixagent.deploy.local import text_run_pieces

    tok = AutoTokenizer.from_pretrained(str(CONFIGS_DIR.parent / FIX / "tokenizer"))
    space = load_space(CONFIGS_DIR / "spaces/tiny-sub.yaml")
    dataset, evaluate, natural = text_run_pieces(space, tok, 32, 2, 2, max_docs=50)
    gold = [src.dataset for src, d in zip(dataset.sources, space.domains) if d.name == "math-gold"][0]
    assert 0 < len(gold) <= 50 and np.isclose(natural.values.sum(), 1) and len(set(natural.values.round(6))) == 5
    assert evaluate.unit == "token"

    def tiny_model(device="cpu"):
        import torch

        torch.manual_seed(0)
        config = AutoConfig.from_pretrained(CONFIGS_DIR.parent / FIX / "tiny-llama")
        return AutoModelForCausalLM.from_config(config), tok

    monkeypatch.setattr(gguf, "load_gguf_model", tiny_model)
    assert cpt.main(["--model", "gguf-smollm2", "--space", "configs/spaces/tiny-sub.yaml", "--steps", "4", "--every",
                     "2", "--batch", "2", "--seq-len", "32", "--max-docs", "50", "--out", str(tmp_path / "o")]) == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["domains"] == list(space.names) and len(report["history"]) == 2
    assert report["start"]["unit"] == "token" and report["model"]["name"] == "SmolLM2-135M"


def test_a_judge_in_the_deploy_eval_scores_the_run_or_refuses_before_anything_is_written(tmp_path, tiny_judge):
    from mixagent.env.judge import JudgeInvalidError

    judge = (f"eval.judge={{model: {tiny_judge}, prefixes: 2, prefix_chars: 60, suffix_chars: 40, "
             f"max_new_tokens: 8, batch_size: 4}}")
    # a random network is no judge: refused (accuracy near 0.5) before the run writes anything
    with pytest.raises(JudgeInvalidError, match="not above chance on field"):
        run_deploy(cfg(tmp_path, judge, name="refused"), progress=False)
    assert not (tmp_path / "refused").exists()
    report = run_deploy(cfg(tmp_path, judge, "eval.judge.on_invalid=mark", "trainer.max_steps=6",
                            "trainer.save_steps=0", "policy.every=2", "eval.judge.every=2"), progress=False)
    j = report["judge"]
    assert j["marked"] == ["source", "target"] and set(j["validity"]) == {"source", "target"}
    assert all(v["items"] == 2 * 3 and not v["valid"] for v in j["validity"].values())
    # judged: the start, the decision at step 4 (every 2nd), and the end; the decision at step 2 repeats the start's
    assert j["judged_evals"] == 3 and j["seconds_per_judged_eval"] > 0
    at = [h["eval"].get("judge_at") for h in report["history"]]
    assert at == [None, 0, None]  # steps 0 and 4 are judged; step 2 repeats the start's scores and says so
    assert "judge_at" not in report["final"] and "judge_at" not in report["start"]
    assert 0 < j["share_of_run_seconds"] < 1 and j["run_seconds"] > 0
    md = (tmp_path / "run" / "report.md").read_text()
    assert "| source | no: " in md and "(**marked**: failed, kept)" in md and "judge reward (lam 0.5)" in md
    # the judge joins the run's identity by content: other weights at the same path are another run
    from mixagent.deploy.job import _identity

    marked = cfg(tmp_path, judge, "eval.judge.on_invalid=mark", name="id")
    before = _identity(marked)
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    AutoModelForCausalLM.from_config(AutoModelForCausalLM.from_pretrained(tiny_judge).config).save_pretrained(
        tiny_judge)
    assert _identity(marked)["eval"]["judge_digest"] != before["eval"]["judge_digest"]
    for ev in (report["start"], report["final"]):
        assert set(ev["judge"]) == {"source", "target"} and all(0 <= v <= 1 for v in ev["judge"].values())
        assert ev["judge_marked"] == ["source", "target"]
    assert j["rewards"]["judge"] == pytest.approx(0.5 * (report["final"]["judge"]["target"]
                                                         - report["start"]["judge"]["target"])
                                                  + 0.5 * (report["final"]["judge"]["source"]
                                                           - report["start"]["judge"]["source"]))

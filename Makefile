# make run   : set up .venv (first time) and run the main job, `lure-fast compare`, on the embedded data
# make test  : set up .venv (first time) and run the test suite
# make bench : run the benchmarks (GPU figures need a CUDA machine)
VENV ?= .venv
STAMP := $(VENV)/.lure-fast-installed
ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test bench ffcv setup clean
run: $(STAMP)
	$(VENV)/bin/lure-fast compare $(ARGS)

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(VENV)/bin/python -m pytest benchmarks --benchmark-enable $(PYTEST_ARGS)

setup: $(STAMP)

ffcv: $(STAMP)
	bash scripts/install_ffcv.sh $(VENV)/bin/python

$(STAMP): pyproject.toml scripts/setup.sh $(wildcard scripts/install_ffcv.sh)
	bash scripts/setup.sh $(VENV)
	touch $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

# make run   : set up .venv (first time) and run the main job, `lure-fast compare`, on the embedded data
# make test  : set up .venv (first time) and run the test suite
# make bench : run the benchmarks (GPU figures need a CUDA machine)
# make setup : create or bring .venv to requirements/lock.txt exactly (plain pip), then FFCV
# make ffcv  : (re)try FFCV's build alone, e.g. after installing its system libraries
# make lock  : re-resolve requirements/lock.txt from pyproject.toml and requirements/pins.txt (uv, in
#              .venv-lock); LOCK_ARGS=--upgrade-package numpy moves one package, the default moves all
# docs/setup.md says what each installs and from where.
VENV ?= .venv
STAMP := $(VENV)/.lure-fast-installed
LOCK := requirements/lock.txt
PINS := requirements/pins.txt
LOCK_VENV ?= .venv-lock
UV_VERSION := 0.13.9
LOCK_ARGS ?= --upgrade
ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test bench ffcv setup lock clean
run: $(STAMP)
	$(VENV)/bin/lure-fast compare $(ARGS)

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(VENV)/bin/python -m pytest benchmarks --benchmark-enable $(PYTEST_ARGS)

setup: $(STAMP)

ffcv: $(STAMP)
	bash scripts/install_ffcv.sh $(VENV)/bin/python

$(STAMP): $(LOCK) pyproject.toml scripts/setup.sh scripts/install_ffcv.sh
	bash scripts/setup.sh $(VENV)
	touch $(STAMP)

# every platform and Python the project supports (Linux x86_64/aarch64, macOS; Python >= 3.10) in one
# file, exact pins with hashes, FFCV itself left to scripts/install_ffcv.sh (pyproject's [tool.uv])
lock:
	test -x $(LOCK_VENV)/bin/uv || { python3 -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/python -m pip install -q uv==$(UV_VERSION); }
	$(LOCK_VENV)/bin/uv pip compile pyproject.toml --extra test --extra ffcv --no-emit-package ffcv \
	    --constraint $(PINS) --universal --python-version 3.10 --generate-hashes \
	    --custom-compile-command "make lock" --quiet $(LOCK_ARGS) --output-file $(LOCK)

clean:
	rm -rf $(VENV) $(LOCK_VENV) build *.egg-info .pytest_cache

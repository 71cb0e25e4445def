# The two commands of the quick start are `make run` and `make test`; both install what they need.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: install test-deps run test test-fast bench lint proto clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py crypto_backend/protocol/_skinny.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[embedded,dev,plot]"
	touch $(STAMP)

run: install            ## start the whole system on the embedded defaults
	scripts/test-deps run
	$(VENV)/bin/robert up

test-deps:              ## system and node packages the tests need (browser, HSM...)
	scripts/test-deps

test: install test-deps ## the whole test suite
	$(VENV)/bin/pytest -q -p no:cacheprovider

test-fast: install test-deps     ## everything but the slow end-to-end and load tests
	$(VENV)/bin/pytest -q -m "not slow"

bench: install          ## benchmarks: print figures, assert nothing
	$(PY) -m bench

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy robert_common crypto_backend robert_server bench simulator loadtests

proto: install          ## regenerate robert_common/rpc from proto/
	$(PY) scripts/gen_proto.py

clean:
	rm -rf $(VENV) build *.egg-info crypto_backend/protocol/*.so

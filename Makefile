# `make test` is the second of README's two commands: test extras, services, the whole suite.
PYTHON ?= python
PIP ?= $(PYTHON) -m pip

.PHONY: test install install-test services unit demo

install:
	$(PIP) install -q -e .

install-test:
	$(PIP) install -q -e ".[test]"

services:
	bash scripts/services/all.sh

# The whole suite: unit + integration (real services) + end to end.
test: install-test services
	set -a; [ ! -f .services.env ] || . ./.services.env; set +a; \
	$(PYTHON) -m pytest -q -p no:cacheprovider -m "not faults" && \
	$(PYTHON) -m pytest -q -p no:cacheprovider -m faults

# Quick unit tests, no services.
unit: install-test
	$(PYTHON) -m pytest -q -m "not integration" tests/unit

demo: install
	$(PYTHON) -m beam_etl --runner=DirectRunner

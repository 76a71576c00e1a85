# kafka-bridge developer commands. `make help` lists them.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

.PHONY: help
help:  ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,dev]'
	touch $(STAMP)

.PHONY: venv
venv: $(STAMP)  ## Create the virtualenv and install the package with its extras.

KAFKA := $(BIN)/python tools/local_kafka.py
TEST_KAFKA_STATE := .cache/kafka/test

.PHONY: promtool
promtool: $(STAMP)  ## Find promtool, installing Debian's prometheus package if missing.
	@$(BIN)/python tools/promtool.py

.PHONY: test
test: $(STAMP) promtool  ## Run the test suite against a local Kafka broker it starts and stops.
	@bootstrap=$$($(KAFKA) start --state-dir $(TEST_KAFKA_STATE)) || exit 1; \
	trap '$(KAFKA) stop --state-dir $(TEST_KAFKA_STATE)' EXIT; \
	echo "local Kafka at $$bootstrap"; \
	KAFKA_BOOTSTRAP_SERVERS=$$bootstrap $(BIN)/pytest --cov --cov-report=term $(PYTEST_ARGS)

.PHONY: chaos
chaos: $(STAMP)  ## Kill, stop and starve the bridge at length; check the ledger of every record.
	$(BIN)/python tools/chaos.py $(CHAOS_ARGS)

.PHONY: demo
demo: $(STAMP)  ## Run the bridge end to end on a local Kafka and a local API.
	$(BIN)/python tools/demo.py

.PHONY: bench
bench: $(STAMP)  ## Measure the bridge per delivery mode, process count and API speed.
	$(BIN)/python tools/bench.py $(BENCH_ARGS)
	$(BIN)/python tools/bench_instrumentation.py

.PHONY: lint
lint: $(STAMP)  ## Check style with ruff and types with mypy.
	$(BIN)/ruff check .
	$(BIN)/mypy

.PHONY: kafka-start
kafka-start: $(STAMP)  ## Start the local Kafka broker and print its address.
	@$(KAFKA) start

.PHONY: kafka-stop
kafka-stop: $(STAMP)  ## Stop the local Kafka broker.
	@$(KAFKA) stop

.PHONY: clean
clean:  ## Remove the virtualenv and caches (keeps the Kafka jars).
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

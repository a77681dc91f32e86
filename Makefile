# The commands CI calls verbatim. Everything runs inside the project's own .venv
# and node_modules, which the targets create on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
# Serving needs the runtime dependencies alone; the development set comes with `make test`.
RUNTIME_STAMP := $(VENV)/.runtime
NODE_STAMP := node_modules/.installed
# The Node.js example client (examples/node) that tests/client/test_node_client.py runs.
NODE_EXAMPLE_STAMP := examples/node/node_modules/.installed
BUF := node_modules/.bin/buf
PROTO_OUT := src/peer_grpc/_proto
PROTO_SRC := protos/peer/v1/peer.proto
# The contract as last released: `make proto-breaking` fails on any change that
# breaks a client generated from it. Move it forward when a release is cut.
PROTO_BASELINE ?= ffbacc593aaf51184c7d49dd3150b49266f8a253

.PHONY: all serve test test-unit fuzz lint proto proto-check proto-breaking bench venv node clean

all: lint test

$(RUNTIME_STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "peer-grpc needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	@touch $@

$(VENV_STAMP): $(RUNTIME_STAMP)
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(NODE_EXAMPLE_STAMP): examples/node/package.json examples/node/package-lock.json
	npm ci --prefix examples/node --no-audit --no-fund --loglevel=error
	@touch $@

venv: $(VENV_STAMP)
node: $(NODE_STAMP)

## serve: start a server on 127.0.0.1:50051 with the in-memory store
serve: $(RUNTIME_STAMP)
	$(VENV)/bin/peer-grpc serve

## test: the whole test suite
test: $(VENV_STAMP) $(NODE_STAMP) $(NODE_EXAMPLE_STAMP)
	$(PY) -m pytest

## test-unit: the fast tests alone (core rules, stores, managers): no gRPC server, no Node
test-unit: $(VENV_STAMP)
	$(PY) -m pytest -m "not e2e"

## fuzz: the fuzz tests with ten times the inputs that `make test` gives them
fuzz: $(VENV_STAMP) $(NODE_STAMP)
	PEER_GRPC_FUZZ_SCALE=10 $(PY) -m pytest tests/server/test_fuzz.py --timeout=0

## bench: measure against bare grpcio; writes BENCHMARKS.md, docs/benchmarks.png and the
## README's headline (about 15 minutes; BENCH_ARGS=--quick for a smoke run)
bench: $(VENV_STAMP)
	$(PY) -m benchmarks $(BENCH_ARGS)

## lint: ruff, mypy, the layer contracts (import-linter) and buf lint/format
lint: $(VENV_STAMP) $(NODE_STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-logo
	$(BUF) lint
	$(BUF) format --diff --exit-code

## proto: regenerate the checked-in Python code (with type stubs) from protos/
proto: $(VENV_STAMP)
	rm -rf $(PROTO_OUT)/peer
	mkdir -p $(PROTO_OUT)/peer/v1
	$(PY) -m grpc_tools.protoc -I protos \
		--python_out=$(PROTO_OUT) --pyi_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) \
		$(PROTO_SRC)
	# protoc writes absolute imports from the proto root; make them package-relative to peer_grpc.
	sed -i 's/^from peer\.v1 import/from peer_grpc._proto.peer.v1 import/' $(PROTO_OUT)/peer/v1/*.py $(PROTO_OUT)/peer/v1/*.pyi
	touch $(PROTO_OUT)/__init__.py $(PROTO_OUT)/peer/__init__.py $(PROTO_OUT)/peer/v1/__init__.py
	# The contract travels in the package, so that users can generate stubs from what they installed.
	cp $(PROTO_SRC) $(PROTO_OUT)/peer/v1/peer.proto

## proto-check: fail when the checked-in generated code differs from what protos/ generates
proto-check: proto
	git diff --exit-code -- $(PROTO_OUT)
	@test -z "$$(git status --porcelain -- $(PROTO_OUT))" || { git status --porcelain -- $(PROTO_OUT); echo "untracked generated files: run make proto and commit"; exit 1; }

## proto-breaking: fail when protos/ breaks compatibility with the contract at PROTO_BASELINE
proto-breaking: $(NODE_STAMP)
	@git cat-file -e '$(PROTO_BASELINE)^{commit}' 2>/dev/null || { echo "proto-breaking: commit $(PROTO_BASELINE) is not in this clone's history (a shallow clone?)"; exit 1; }
	$(BUF) breaking --against '.git#ref=$(PROTO_BASELINE)'

clean:
	rm -rf $(VENV) node_modules examples/node/node_modules .pytest_cache .mypy_cache .ruff_cache

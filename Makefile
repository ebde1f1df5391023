# The project's task entry points. CI runs `make test` (through .ci/run).
#
# Every target that builds first runs scripts/bootstrap.sh, which installs
# what is missing (the wasm32-wasip2 target, a WASI C toolchain for QuickJS)
# and says what it does. All Rust builds use the release profile: one build
# of wasmtime and the guest serves the CLI, the tests and the benches.

CARGO ?= cargo
SCRIPT ?= examples/agent.js
INPUT ?= {}
GUEST_FLAGS = --release -p marionette-guest --target wasm32-wasip2 --target-dir target/guest
# The guest's release profile, as host/build.rs sets it for its build:
# no debug info, and its Rust optimised as one unit (LTO). A build with the
# name section for profiling adds CARGO_PROFILE_RELEASE_STRIP=debuginfo.
GUEST_PROFILE = CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1
# The component those flags build (host/build.rs builds the same file).
GUEST_WASM = target/guest/wasm32-wasip2/release/marionette_guest.wasm
# The component every host loads: the guest booted and snapshotted by
# host/build.rs (Wizer), beside the guest as built.
GUEST_SNAPSHOT = target/guest/wasm32-wasip2/release/marionette_guest.snapshot.wasm
# The Rust build every target shares (the same packages as `make test`'s,
# so that features unify the same way and nothing rebuilds).
RUST_BUILD = $(CARGO) test --release --locked -p marionette -p marionette-cli -p marionette-bench --tests --no-run

.PHONY: all bootstrap build run example-cassette test layering lint fmt bench soak fuzz clean guest snapshot node-guest test-node python-component python-venv python-wheel test-python lint-python

all: build

bootstrap:
	@./scripts/bootstrap.sh --python >/dev/null

build:
	@./scripts/bootstrap.sh >/dev/null
	$(CARGO) build --release --locked -p marionette-cli

## The main job: run a script (SCRIPT=..., INPUT='{"k": 1}', ENGINE=...).
## With no key (OPENAI_API_KEY, ANTHROPIC_API_KEY), no ENGINE, no
## MARIONETTE_CONFIG and the default script and input, it replays the
## recorded run of examples/agent.js (EXAMPLE_CASSETTE) and says so;
## otherwise it runs live.
EXAMPLE_CASSETTE = examples/agent.cassette.jsonl
run: build
	@if [ -z "$(ENGINE)$$OPENAI_API_KEY$$ANTHROPIC_API_KEY$$MARIONETTE_CONFIG" ] \
		&& [ "$(SCRIPT)" = "examples/agent.js" ] && [ '$(INPUT)' = '{}' ]; then \
		echo "make run: no key and no ENGINE: replaying $(EXAMPLE_CASSETTE), a recorded run of examples/agent.js (set OPENAI_API_KEY or ENGINE=... to run it live)" >&2; \
		./target/release/marionette replay $(EXAMPLE_CASSETTE); \
	else \
		./target/release/marionette run $(SCRIPT) --input '$(INPUT)' $(if $(ENGINE),--engine $(ENGINE)); \
	fi

## Records $(EXAMPLE_CASSETTE) again, against the local fake provider of the
## tests (tests/cli/replay.rs), never a network: after a change of the guest
## or of examples/agent.js.
example-cassette: bootstrap
	$(CARGO) test --release --locked -p marionette -p marionette-cli -p marionette-bench --test cli replay::record_the_example_cassette -- --ignored --exact

## Every check and every test; ends with the test runner's summary
## (doctests first: their report does not end on a summary line; then the
## Python and Node packages; then the Rust tests, the bench crate's own unit
## tests among them, in one cargo invocation so that they share one build).
test: bootstrap lint layering
	$(CARGO) test --release --locked -p marionette -p marionette-cli --doc
	$(MAKE) --no-print-directory test-python test-node
	$(CARGO) test --release --locked -p marionette -p marionette-cli -p marionette-bench --tests

## The library without default features compiles no CLI, config file,
## HTTP client or TypeScript stripper: an embedder of the sandbox gets none
## of them. (wasmtime's
## compilation cache brings toml 0.9 for its own settings; our config file's
## toml 1 must not be there.)
layering:
	@if $(CARGO) tree --locked -p marionette --no-default-features -e normal --prefix none \
		| grep -E '^(clap|reqwest|hyper|tracing-subscriber|vte|cap-std|swc_[a-z_]+) |^toml v1\.'; then \
		echo "layering: the library without default features depends on the crates above"; exit 1; \
	else echo "layering: marionette --no-default-features has no clap, toml 1, reqwest, hyper, tracing-subscriber, vte, cap-std or swc"; fi

lint:
	@./scripts/bootstrap.sh >/dev/null
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --locked -p marionette -p marionette-cli -p marionette-bench --all-targets -- -D warnings
	$(CARGO) clippy --release --locked -p marionette --no-default-features --lib -- -D warnings
	WASI_SDK="$$(./scripts/bootstrap.sh 2>/dev/null)" $(CARGO) clippy --locked $(GUEST_FLAGS) -- -D warnings

fmt:
	$(CARGO) fmt --all

## The Python package (host-python/): the guest copied in, a project-local
## virtualenv (target/python-venv) with the package installed from its
## folder, ruff, then pytest. Run again, it only reinstalls the package.
PYTHON ?= python3
PY_VENV = target/python-venv

python-component: snapshot
	cp $(GUEST_SNAPSHOT) host-python/src/marionette/marionette_guest.wasm

$(PY_VENV)/bin/python:
	$(PYTHON) -m venv $(PY_VENV)

python-venv: $(PY_VENV)/bin/python
	$(PY_VENV)/bin/python -m pip install --quiet --disable-pip-version-check pytest 'ruff>=0.6' 'mypy>=1.8' 'wasmtime>=50,<51' 'jsonschema>=4.18'

python-wheel: python-component python-venv
	$(PY_VENV)/bin/python -m pip wheel --quiet --disable-pip-version-check --no-deps -w target/python-dist ./host-python

lint-python: python-venv
	$(PY_VENV)/bin/ruff format --check host-python
	$(PY_VENV)/bin/ruff check host-python
	cd host-python && ../$(PY_VENV)/bin/mypy --strict --ignore-missing-imports src/marionette

test-python: python-component python-venv lint-python
	$(PY_VENV)/bin/python -m pip install --quiet --disable-pip-version-check ./host-python
	$(PY_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps ./host-python
	cd host-python && ../$(PY_VENV)/bin/python -m pytest -q -p no:cacheprovider tests

## Benchmarks: writes bench/report/report.json and bench/report/report.md.
bench:
	@./scripts/bootstrap.sh >/dev/null
	$(CARGO) bench --locked -p marionette -p marionette-cli -p marionette-bench --bench marionette

## The load test, long: 200k calls against one sandbox and against three.
soak: bootstrap
	MARIONETTE_SOAK=200000 $(CARGO) test --release --locked -p marionette --test integration load:: -- --nocapture

## The property tests, long: 5000 cases each.
fuzz: bootstrap
	MARIONETTE_FUZZ_CASES=5000 $(CARGO) test --release --locked -p marionette --lib proptest
	MARIONETTE_FUZZ_CASES=5000 $(CARGO) test --release --locked -p marionette --test integration fuzz::

clean:
	$(CARGO) clean

## The Node package (host-node/): the guest transpiled by jco into it, its
## dependencies, and its checks and tests. `npm install ./host-node` works
## once `make node-guest` has run.
NODE_TEST_DIR = target/node-test

host-node/node_modules/.installed: host-node/package.json host-node/package-lock.json
	cd host-node && npm ci --no-audit --no-fund --loglevel=error
	touch $@

host-node/guest/marionette_guest.js: $(GUEST_SNAPSHOT) host-node/node_modules/.installed
	rm -rf host-node/guest
	cd host-node && npx jco transpile ../$(GUEST_SNAPSHOT) --name marionette_guest --instantiation sync --no-wasi-shim --quiet -o guest
	# The component's SHA-256, which a cassette's header names (the Rust and
	# Python hosts hash the same file).
	node -e 'const f = require("fs"); f.writeFileSync(process.argv[2], require("crypto").createHash("sha256").update(f.readFileSync(process.argv[1])).digest("hex") + "\n")' \
		$(GUEST_SNAPSHOT) host-node/guest/component.sha256

## The guest alone, built exactly as the host's build.rs builds it (same
## folder, same profile settings, GUEST_PROFILE), so neither build
## invalidates the other.
$(GUEST_WASM): guest
guest:
	WASI_SDK="$$(./scripts/bootstrap.sh 2>/dev/null)" $(GUEST_PROFILE) CARGO_PROFILE_RELEASE_STRIP=true \
		$(CARGO) build --locked $(GUEST_FLAGS)

## The guest booted and snapshotted (host/build.rs makes it while building
## the host; this runs that build).
$(GUEST_SNAPSHOT): snapshot
snapshot: guest
	$(RUST_BUILD)

node-guest: snapshot host-node/guest/marionette_guest.js

## Lint (tsc over the types, prettier), then `node --test` over host-node/test
## with the package also installed, as a user would, into target/node-test.
test-node: node-guest
	cd host-node && npx tsc -p tsconfig.json && npx prettier --check .
	mkdir -p $(NODE_TEST_DIR)
	test -f $(NODE_TEST_DIR)/package.json || echo '{"private": true, "type": "module"}' > $(NODE_TEST_DIR)/package.json
	rm -rf $(NODE_TEST_DIR)/node_modules/marionette
	cd $(NODE_TEST_DIR) && npm install --no-audit --no-fund --loglevel=error --install-links ../../host-node
	cd host-node && MARIONETTE_NODE_TEST_DIR=../$(NODE_TEST_DIR) node --test --test-reporter=spec test/*.test.js

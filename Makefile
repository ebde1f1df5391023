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

.PHONY: all bootstrap build run test layering lint fmt bench soak fuzz clean

all: build

bootstrap:
	@./scripts/bootstrap.sh --python >/dev/null

build:
	@./scripts/bootstrap.sh >/dev/null
	$(CARGO) build --release --locked -p marionette-cli

## The main job: run a script (SCRIPT=..., INPUT='{"k": 1}').
run: build
	./target/release/marionette run $(SCRIPT) --input '$(INPUT)'

## Every check and every test; ends with the test runner's summary
## (doctests first: their report does not end on a summary line).
test: bootstrap lint layering
	$(CARGO) test --release --locked -p marionette -p marionette-cli --doc
	$(CARGO) test --release --locked -p marionette -p marionette-cli --tests

## The library without default features compiles no CLI, config file or
## HTTP client: an embedder of the sandbox gets none of them. (wasmtime's
## compilation cache brings toml 0.9 for its own settings; our config file's
## toml 1 must not be there.)
layering:
	@if $(CARGO) tree --locked -p marionette --no-default-features -e normal --prefix none \
		| grep -E '^(clap|reqwest|hyper|tracing-subscriber|vte) |^toml v1\.'; then \
		echo "layering: the library without default features depends on the crates above"; exit 1; \
	else echo "layering: marionette --no-default-features has no clap, toml 1, reqwest, hyper, tracing-subscriber or vte"; fi

lint:
	@./scripts/bootstrap.sh >/dev/null
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --locked -p marionette -p marionette-cli -p marionette-bench --all-targets -- -D warnings
	$(CARGO) clippy --release --locked -p marionette --no-default-features --lib -- -D warnings
	WASI_SDK="$$(./scripts/bootstrap.sh 2>/dev/null)" $(CARGO) clippy --locked $(GUEST_FLAGS) -- -D warnings

fmt:
	$(CARGO) fmt --all

## Benchmarks: writes bench/report/report.json and bench/report/report.md.
bench:
	@./scripts/bootstrap.sh >/dev/null
	$(CARGO) bench --locked -p marionette-bench

## The load test, long: 200k calls against one sandbox and against three.
soak: bootstrap
	MARIONETTE_SOAK=200000 $(CARGO) test --release --locked -p marionette --test integration load:: -- --nocapture

## The property tests, long: 5000 cases each.
fuzz: bootstrap
	MARIONETTE_FUZZ_CASES=5000 $(CARGO) test --release --locked -p marionette --lib proptest
	MARIONETTE_FUZZ_CASES=5000 $(CARGO) test --release --locked -p marionette --test integration fuzz::

clean:
	$(CARGO) clean

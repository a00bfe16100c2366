# Fluxbase developer targets. The README and .ci/run name these; keep them in step.

CARGO ?= cargo

.PHONY: run test lint fmt bench build fuzz-api

## run: build and start the server on a managed local Postgres in ./fluxbase-data
run:
	$(CARGO) run --release --bin fluxbase -- serve

## test: every test suite (what CI runs)
test:
	cd tests/clients && npm ci --no-audit --no-fund --loglevel=error
	tests/python/venv.sh
	$(CARGO) test --workspace --locked
# The client suites (tier 3: the pinned @supabase packages in tests/clients) run inside
# `cargo test` (tests/it/clients.rs) against this build; npm ci above installs them.
# tests/python/venv.sh installs the pinned Python tools (moto's S3 server) into .venv-tests,
# skipping the install when tests/python/requirements.txt is unchanged.

## lint: formatting and clippy, warnings are errors; the build without default features
## (no OTLP export) must compile too
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(CARGO) check --no-default-features --locked

## fmt: format the code
fmt:
	$(CARGO) fmt --all

## bench: benchmarks; raw output under bench/results/<date>/
bench: build
	bench/run.sh

## build: the release binary (target/release/fluxbase)
build:
	$(CARGO) build --release --locked

## fuzz-api: schemathesis against a release build on a throwaway data dir (not part of test)
fuzz-api:
	CARGO="$(CARGO)" scripts/fuzz-api.sh

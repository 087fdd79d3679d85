# crambench: the two commands a new user runs are `make demo` and `make test`.
# Everything they need (libtorch, a Python venv for interop checks) is installed by scripts/.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: demo test lint libtorch pyenv build release bench-hash clean-demo

## demo: the main job on embedded demo data (now: fingerprint → keygen → sign → verify).
demo: libtorch
	scripts/demo.sh

## test: the whole suite (unit, integration, interop with Python reference implementations).
test: libtorch pyenv
	$(CARGO) build --all-targets
	CRAMBENCH_REQUIRE_INTEROP=1 $(CARGO) test --all-targets

## lint: formatting and clippy, warnings as errors.
lint: libtorch
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

libtorch:
	scripts/libtorch.sh

pyenv:
	scripts/pyenv.sh

build: libtorch
	$(CARGO) build

release: libtorch
	$(CARGO) build --release

## bench-hash: crambench hash vs sha256sum on a 2 GB file, side by side (needs ~2 GB in /tmp).
bench-hash: release
	target/release/crambench bench hash --size 2G --runs 5

# crambench: the two commands a new user runs are `make demo` and `make test`.
# Everything they need (libtorch, a Python venv for interop checks) is installed by scripts/.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: demo test lint fuzz libtorch pyenv torchenv chromium slurm build release bench-hash bench-data bench-train bench-hub

## demo: the main job on the embedded demo data: data → pretrain → fine-tune → signed manifest.
demo: libtorch
	scripts/demo.sh

## test: the whole suite (unit, integration, interop with Python reference implementations, a single-node Slurm, the
## report in headless Chromium: screenshots in target/report-screenshot.png and
## target/compare-screenshot.png).
test: libtorch pyenv torchenv chromium slurm
	$(CARGO) build --all-targets
	CRAMBENCH_REQUIRE_INTEROP=1 CRAMBENCH_REQUIRE_TORCH=1 CRAMBENCH_REQUIRE_BROWSER=1 CRAMBENCH_REQUIRE_SLURM=1 $(CARGO) test --all-targets

## fuzz: the property-based fuzz targets of tests/fuzz.rs at length (20000 cases each; make test
## runs 256 per target).
fuzz: libtorch
	CRAMBENCH_FUZZ_CASES=$${CRAMBENCH_FUZZ_CASES:-20000} $(CARGO) test --test fuzz -- --nocapture --test-threads 1

## lint: formatting and clippy, warnings as errors.
lint: libtorch
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

libtorch:
	scripts/libtorch.sh

pyenv:
	scripts/pyenv.sh

torchenv:
	scripts/torchenv.sh

## chromium: Debian's headless browser for tests/report_browser.rs (apt-get, when missing).
chromium:
	scripts/chromium.sh >/dev/null

## slurm: Debian's slurm-wlm and munge for tests/sweep_slurm.rs (apt-get when missing; the test
## starts and stops its own single-node cluster with scripts/slurm.sh).
slurm:
	scripts/slurm.sh install

build: libtorch
	$(CARGO) build

release: libtorch
	$(CARGO) build --release

## bench-hash: crambench hash vs sha256sum on a 2 GB file, side by side (needs ~2 GB in /tmp).
bench-hash: release
	target/release/crambench bench hash --size 2G --runs 5

## bench-train: the trainer's step of full-size crammed-bert against PyTorch, side by side, and
## the flat optimizer step against the per-parameter one.
bench-train: release torchenv
	target/release/crambench bench train-step --recipe baselines/crammed-bert.toml --micro-batch 8 --compare-python
	target/release/crambench bench optim --recipe baselines/crammed-bert.toml --steps 7

## bench-hub: hub download throughput from a loopback hub, crambench against huggingface_hub, side by side.
bench-hub: pyenv
	cargo bench --bench hub_download

## bench-data: end-to-end tokenisation throughput against Python tokenizers, side by side.
bench-data: release pyenv
	target/release/crambench bench data --python .venv-interop/bin/python

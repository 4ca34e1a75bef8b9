# Tessera: the two set-up commands are `make demo` (main job) and `make test` (whole suite).
# Every target installs what it needs first (scripts/install-deps.sh, idempotent).

SHELL := /bin/bash
TARGET := x86_64-unknown-linux-musl
BIN := out/bin/tessera
NODE_BIN := out/bin/tessera-node
export CC_x86_64_unknown_linux_musl := musl-gcc
export CARGO_TERM_COLOR := never
# One-shot builds gain nothing from incremental state, which grew to gigabytes per build.
export CARGO_INCREMENTAL ?= 0

.PHONY: all deps build image test unit e2e lint fuzz fuzz-smoke demo console bench bench-boot bench-ca bench-identity bench-hub bench-node bench-container lock clean

all: image

deps:
	@scripts/install-deps.sh

# The static multi-call binary, twice: the host build (every role) and the node build that
# goes into the image (no image builder, VM runner or benchmarks: a smaller initramfs).
build: deps
	cargo build --release --locked --target $(TARGET) -p tessera-init
	@install -D -m 0755 target/$(TARGET)/release/tessera $(BIN)
	cargo build --release --locked --target $(TARGET) -p tessera-init --no-default-features --target-dir target/node
	@install -D -m 0755 target/node/$(TARGET)/release/tessera $(NODE_BIN)

image: build
	$(BIN) image build --out out --tessera-bin $(NODE_BIN)

# Whole suite: lints, unit and host tests, then end-to-end boots in QEMU.
test: image lint unit fuzz-smoke e2e

lint: deps
	cargo fmt --all -- --check
	cargo clippy --locked --workspace --all-targets -- -D warnings
	cargo fmt --manifest-path fuzz/Cargo.toml -- --check
	cargo clippy --locked --manifest-path fuzz/Cargo.toml --all-targets -- -D warnings

unit: deps
	cargo test --locked --workspace --exclude tessera-e2e

# Coverage-guided fuzzing (libFuzzer on the stable toolchain, fuzz/): every target for
# FUZZ_RUNS executions (10 million by default); the smoke replays the seeds and saved crashes
# and fuzzes each target for FUZZ_SMOKE_SECONDS (8).
fuzz: deps
	scripts/fuzz.sh

fuzz-smoke: deps
	scripts/fuzz.sh --smoke

e2e: image
	cargo test --locked -p tessera-e2e --no-fail-fast -- --test-threads=2

# Main job: a local CA and three nodes on a private bridge, each with a data disk and a
# declared container (a hub component); node 3 calls node 1's container through the hubs;
# power off; the CA's ledger (tests/src/bin/demo.rs). NODES=1: one node, scripts/demo.sh.
# `make demo CONSOLE=1` (or `make console`) leaves you on the node's console instead.
NODES ?= 3
demo: image
ifeq ($(CONSOLE),1)
	$(BIN) vm run --boot kernel --interactive
else ifeq ($(NODES),1)
	BIN=$(BIN) scripts/demo.sh
else ifeq ($(NODES),3)
	cargo run --locked -q -p tessera-e2e --bin demo
else
	@echo "NODES=$(NODES): the demo runs one node (NODES=1) or the three-node cluster (NODES=3, the default)" >&2; exit 2
endif

console: image
	$(BIN) vm run --boot kernel --interactive

bench: bench-boot bench-ca bench-identity bench-hub bench-node bench-container

bench-boot: image
	$(BIN) bench boot --runs 5

# The peer is cfssl (Debian's golang-cfssl), measured in the same run.
bench-ca: build
	@dpkg-query -W -f='$${Status}' golang-cfssl 2>/dev/null | grep -q 'install ok installed' || \
	  (apt-get install -y -qq --no-install-recommends golang-cfssl >/dev/null || sudo apt-get install -y -qq --no-install-recommends golang-cfssl >/dev/null)
	$(BIN) bench ca

# PID 1 start → node certificate, per key mode, against the skeleton boot in the same run.
bench-identity: image
	$(BIN) bench identity --runs 5

# The peer is NATS request-reply through Debian's nats-server, measured in the same run.
bench-hub: build
	@dpkg-query -W -f='$${Status}' nats-server 2>/dev/null | grep -q 'install ok installed' || \
	  (apt-get install -y -qq --no-install-recommends nats-server >/dev/null || sudo apt-get install -y -qq --no-install-recommends nats-server >/dev/null)
	env -u RUST_BACKTRACE PATH="$$PATH:/usr/sbin" $(BIN) bench hub

# Node agent: snapshot create+delete, ours (Btrfs ioctls, LVM thin API) against the btrfs and
# lvm2 CLIs in the same VM and run; node-agent service start-up and RSS at idle.
bench-node: image
	$(BIN) bench node --runs 3

# Container agent: create+start+wait+delete of /bin/true through the agent's socket against
# Debian's crun 1.8.1 (`crun run`, shipped to the VM on a disk) in the same VM and run; template
# clone time; the agent's idle RSS and the per-container shim's.
bench-container: image
	$(BIN) bench container --runs 20

# Re-pin the Debian packages of the image to the current apt candidates.
lock: build
	$(BIN) image lock --update

clean:
	rm -rf out target

# Set-up and checks for a fresh Debian 12 machine. `make run` and `make test`
# install everything they need; see README.md.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= ./data

# Real peers used by the interop tests and benchmarks (Debian package names).
PEER_PACKAGES := sip-tester tshark tcpdump iperf3 iproute2 iptables iputils-ping util-linux \
	strongswan-charon strongswan-swanctl libcharon-extra-plugins \
	libstrongswan-standard-plugins
# Peers that only the benchmarks run beside ours.
BENCH_PACKAGES := rtpengine-daemon kamailio valgrind

.PHONY: run test lint types unit peers bench-peers install-packages bench demo clean python-venv

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || $(MAKE) --no-print-directory python-venv
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

# Debian's python3 ships venv in a separate package.
python-venv:
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; \
	else echo "python3-venv is missing: run 'apt-get install python3-venv' as root"; exit 1; fi

# CONFIG=docs/examples/single-node.yaml runs the call engine with that file.
run: $(STAMP)
	$(BIN)/sbc serve --data-dir $(DATA) $(if $(CONFIG),--config $(CONFIG))

# Installs the real peers when run as root; otherwise their tests skip (or
# fail under SBC_STRICT=1).
peers:
	@$(MAKE) --no-print-directory install-packages PACKAGES="$(PEER_PACKAGES)"

bench-peers:
	@$(MAKE) --no-print-directory install-packages PACKAGES="$(PEER_PACKAGES) $(BENCH_PACKAGES)"

install-packages:
	@missing=$$(for p in $(PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
		echo "installing peers: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else echo "not root: peers not installed ($$missing); their tests will skip"; fi

lint: $(STAMP)
	$(BIN)/ruff check sbc ipsec web tests bench
	$(BIN)/ruff format --check sbc ipsec web tests bench

types: $(STAMP)
	$(BIN)/mypy sbc ipsec web

unit: $(STAMP)
	$(BIN)/pytest -n 2 $(PYTEST_ARGS)

test: peers $(STAMP) lint types unit

# Two nodes joined by a secure trunk, SIPp on both ends (root);
# DEMO_ARGS="--calls 10 --keylog" changes the run.
demo: peers $(STAMP)
	$(BIN)/python -m sbc.demo $(DEMO_ARGS)

bench: $(STAMP) bench-peers
	$(BIN)/python -m bench $(BENCH)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache

# The two set-up commands: `make run` and `make test`. Everything they need is installed into .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install build run test lint bench annotate clean browser-deps net-deps cluster-deps bench-deps fuzz

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "Cython==3.3.1" "setuptools>=68" wheel
	$(PY) -m pip install -q --no-build-isolation -e '.[test,bench]'
	touch $(STAMP)

install: $(STAMP)

build: install
	$(PY) setup.py -q build_ext --inplace

run: build
	$(VENV)/bin/mediarouter serve

test: build
	$(VENV)/bin/ruff check control router bench tests
	$(PY) -m pytest -q -p no:cacheprovider tests

bench: build
	$(PY) -m bench suite

# Each atheris target of tests/fuzz for FUZZ_SECONDS (default 60) seconds; a crash fails (tests/fuzz/run.py).
FUZZ_SECONDS ?= 60
fuzz: build
	$(PY) -c 'import atheris' 2>/dev/null || $(PY) -m pip install -q --no-build-isolation -e '.[fuzz]'
	FUZZ_SECONDS=$(FUZZ_SECONDS) $(PY) -m tests.fuzz.run

annotate: install
	$(PY) setup.py -q build_ext --inplace --cython-annotate

# Optional: Chromium and nginx (Debian) and the pinned livekit-client + playwright-core for the browser end-to-end
# tests (tests/e2e/test_livekit_sdk.py, tests/e2e/test_demo_page.py: the page at / and TLS through nginx), which
# skip with their reason when these are missing. Needs root for apt-get.
browser-deps:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	command -v nginx >/dev/null || test -x /usr/sbin/nginx || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx) \
		|| echo "nginx unavailable: the TLS test will skip"
	cd tests/e2e/js && npm ci --silent --no-audit --no-fund

# Optional: nftables and coturn (Debian) for the reachability end-to-end tests (tests/e2e/test_reach.py: 1:1 NAT,
# UDP blocked, TURN), which skip with their reason when they are missing. Needs root for apt-get.
net-deps:
	command -v nft >/dev/null && command -v turnserver >/dev/null || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nftables coturn)

# Optional: redis-server (Debian) for the cluster tests (tests/cluster/: registry, ownership, relay, two nodes),
# which skip with their reason when it is missing. Needs root for apt-get.
cluster-deps:
	command -v redis-server >/dev/null || test -x /usr/bin/redis-server || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server)

# Optional: Janus (Debian) for `python -m bench fanout --janus`, the suite's Janus case and tests/bench/test_janus.py,
# which skip with their reason when it is missing. Needs root for apt-get.
bench-deps:
	command -v janus >/dev/null || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends janus)

clean:
	rm -rf build $(VENV) fastpath/*.so fastpath/*.c fastpath/*.html

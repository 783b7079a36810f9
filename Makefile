# Buckets: two commands on a fresh machine.
#   make run   - set up .venv and start a single-node server on :9000 with ./data
#   make test  - set up .venv and run the default test suite (deterministic)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DATA   ?= ./data
ADDRESS ?= :9000

.PHONY: run tools test test-fuzz test-slow test-rss test-faults test-crash test-cluster test-all bench bench-http venv clean prometheus-check

# Intel's ISA-L computes the erasure code's parity (the very pieces zfec computes, ~80 times less
# CPU: src/buckets/erasure/isal.py); without it zfec does the work. Debian's libisal2.
$(STAMP): pyproject.toml
	@ldconfig -p | grep -q 'libisal\.so\.2 ' || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libisal2; } \
		|| echo "libisal2 could not be installed: zfec computes the parity"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/buckets server --address $(ADDRESS) $(DATA)

# The integration tests drive presigned URLs with curl, rclone and restic, and browser uploads with Debian's
# chromium (through Playwright, whose own browser download does not work here); the ops tests
# scrape a server with a real Prometheus and check the documented alert rules with promtool:
# install them if this machine lacks them. Without one, its tests skip, saying why.
tools:
	@command -v curl >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl; }
	@command -v rclone >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rclone; } \
		|| echo "rclone could not be installed: its tests will be skipped"
	@command -v restic >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic; } \
		|| echo "restic could not be installed: tests/integration/test_client_restic.py will be skipped"
	@command -v s3fs >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq s3fs; } \
		|| echo "s3fs-fuse could not be installed: tests/integration/test_client_s3fs.py will be skipped"
	@command -v faketime >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime; } \
		|| echo "faketime could not be installed: tests/cluster/test_cluster_clocks.py will be skipped"
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
		|| echo "chromium could not be installed: tests/integration/test_browser_upload.py will be skipped"
	@{ command -v prometheus >/dev/null && command -v promtool >/dev/null; } \
		|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus; } \
		|| echo "prometheus could not be installed: tests/ops/test_ops_prometheus.py and the alert rules' promtool check will be skipped"
	@$(MAKE) --no-print-directory $(JS_STAMP)

# The AWS SDK for JavaScript v3 (tests/integration/test_client_js.py): Node.js and npm from Debian
# when the machine has none, the SDK's current release from the npm registry.
JS_DIR   := tests/integration/js
JS_STAMP := $(JS_DIR)/node_modules/.installed
$(JS_STAMP): $(JS_DIR)/package.json
	@{ command -v node >/dev/null && command -v npm >/dev/null; } \
		|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; } \
		|| echo "Node.js could not be installed: tests/integration/test_client_js.py will be skipped"
	@if command -v npm >/dev/null; then \
		cd $(JS_DIR) && npm install --no-audit --no-fund --no-package-lock --loglevel=error && touch node_modules/.installed \
		|| echo "the AWS SDK for JavaScript could not be installed: tests/integration/test_client_js.py will be skipped"; fi

# Hypothesis runs its "ci" profile here: derandomized, the same examples on every run
# (tests/hypothesis_profiles.py), so a random example never decides whether a change lands.
# TEST_WORKERS pytest-xdist workers, each test file on one worker (its module-scoped servers
# start once); each test process hands out ports from its own block (tests/serverproc.py).
TEST_WORKERS ?= 2
test: $(STAMP) tools
	HYPOTHESIS_PROFILE=ci $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=25

# Random examples: hypothesis's "fuzz" profile over the unit fuzz tests, then FUZZ_SECONDS
# of generated HTTP requests against a real server and as long against a 4-node cluster
# (tests/fuzz; FUZZ_SEED repeats a run),
# then six random histories of the replicated index with lost messages (LOSSY_SEEDS repeats).
FUZZ_SECONDS ?= 600
test-fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest -q tests/unit/auth/test_auth_fuzz.py
	FUZZ_SECONDS=$(FUZZ_SECONDS) $(PY) -m pytest -q -m fuzz tests/fuzz
	$(PY) -m pytest -q -s -m fuzz tests/unit/cluster/test_index_history.py

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

test-rss: $(STAMP)
	$(PY) -m pytest -q -s -m slow tests/slow/test_rss_large_upload.py

test-faults: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m faults tests/faults

# Power loss (tests/crash): every write path cut at every sync point, each crash state the
# filesystem model allows reopened and checked (architecture/consistency.md, "Power loss");
# then a sampled concurrent campaign. BUCKETS_CRASH_SEED picks other samples. On TEST_WORKERS
# workers, the campaigns spread one by one (17 minutes here with two; over 30 with one).
test-crash: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist load -m 'crash or not (slow or faults or fuzz or cluster)' tests/crash

# 4-node clusters on 127.0.0.1-4 (tests/cluster): the fault suite (kill -9, two nodes down, a
# partitioned node, a linearizability check; marked `cluster`), growth, membership, disk changes,
# lifecycle and peer-call tests (also `cluster`), and the fast subset that make test runs too
# (test_cluster_basic, test_compose, test_growth_under_load[fast]); then the control plane's
# own multi-process tests (tests/unit/cluster, marked `cluster`: members added and removed, a
# follower sent a snapshot, every node restarted from its journal). The partition
# cuts peer traffic with nftables, and the slow link throttles it through tc's HTB on lo (both
# need root; installed here if missing, skipped if unusable).
# Then the whole integration suite against a 4-node cluster (its `cluster4` parameter; make test
# runs only objects, multipart and listing there), on TEST_WORKERS workers like make test
# (tests/cluster stays in one process: its partition rules are the machine's firewall).
test-cluster: $(STAMP) tools
	@command -v nft >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables; } || true
	@command -v tc >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2; } || true
	$(PY) -m pytest -q -rsx -m 'cluster or not (slow or faults or fuzz)' tests/cluster
	$(PY) -m pytest -q -rsx -m cluster tests/unit/cluster
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m 'not (slow or faults or fuzz)' -k cluster4 tests/integration

test-all: $(STAMP)
	$(PY) -m pytest -q -m ''

prometheus-check: $(STAMP)
	@command -v prometheus >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus; }
	$(PY) -m pytest -q -rs tests/ops/test_ops_prometheus.py tests/ops/test_ops_docs.py

bench: $(STAMP)
	$(PY) -m bench

bench-http: $(STAMP)
	$(PY) -m bench --suite http

clean:
	rm -rf $(VENV) build dist src/*.egg-info

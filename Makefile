# Everything a fresh machine needs: `make up` runs the product, `make test` runs the tests.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
BUF := tools/node_modules/.bin/buf
# torch, torchvision and open-clip-torch go in the same pip command as the rest, so pip
# never swaps torch out from under open-clip.
PIP_INSTALL := $(PY) -m pip install --disable-pip-version-check

CHROMIUM := /usr/bin/chromium

.PHONY: install up test lint-proto check-generated breaking-proto gen bench

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

lint-proto: install
	$(BUF) lint
	$(BUF) format --diff --exit-code

# Fails when proto/ and gen/ disagree (someone edited a .proto without regenerating).
check-generated: install
	rm -rf .gen-check && scripts/gen_proto.sh .gen-check
	diff -r --exclude=__pycache__ gen/photos .gen-check/photos && rm -rf .gen-check

# Breaking-change check of proto/ against the previous commit (FILE rules, see buf.yaml).
breaking-proto: install
	@if git rev-parse -q --verify HEAD~1 >/dev/null && git cat-file -e HEAD~1:buf.yaml 2>/dev/null; then \
	  $(BUF) breaking --against '.git#ref=HEAD~1'; else echo "no earlier commit with buf.yaml"; fi

test: install $(CHROMIUM) lint-proto check-generated breaking-proto
	$(VENV)/bin/pytest -ra

bench: install
	$(PY) bench/benchmark.py

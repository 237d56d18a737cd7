# hepwatch: `make run` (the main job) and `make test` (everything, then all tests).
# Both create .venv and install what they need; as root they also install the Debian
# packages the end-to-end tests use (kamailio, sip-tester).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# What the install builds from: a change to any of it reinstalls (the compiled modules'
# extensions are found before their sources, see setup.py). All of consumers/, the compiled
# collector modules and the C sources rather than setup.py's list again, so the two cannot
# drift apart; not */*/*.c, which would take the C that mypyc writes under build/.
BUILT_FROM := pyproject.toml setup.py collector/capfile.py collector/hep/model.py \
	$(sort $(wildcard consumers/*.py consumers/*/*.py collector/*/*.c consumers/*/*.c))
STAMP := $(VENV)/.installed-$(shell cat $(BUILT_FROM) | md5sum | cut -c1-12)

.PHONY: run test venv debs lint format bench clean

$(STAMP): $(BUILT_FROM)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

# Debian packages for the end-to-end tests; skipped (and those tests skip) when not root.
debs:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; \
	  for p in kamailio sip-tester; do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "installing$$missing"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null \
	      || echo "warning: could not install$$missing; end-to-end tests will skip"; \
	  fi; \
	else echo "not root: skipping Debian packages (end-to-end tests skip without kamailio and sipp)"; fi

run: $(STAMP)
	$(BIN)/hepwatch run

test: $(STAMP) debs
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -p no:cacheprovider
	@echo "the sans-I/O tests again on the interpreted sources of the compiled modules:"
	HEPWATCH_PURE_PYTHON=1 $(BIN)/python -m pytest -q -p no:cacheprovider -m "not integration and not e2e"

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python bench/collector/run.py

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache

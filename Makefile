VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo lab lint bench bench-quick clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q
	$(MAKE) --no-print-directory lint

lint: $(STAMP)
	$(VENV)/bin/ruff check memlab tests benchmarks
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy

# JupyterLab on the first notebook. Headless (no DISPLAY/WAYLAND_DISPLAY, not macOS) it opens no
# browser and prints the URL to paste instead; as root (containers, CI) it passes --allow-root.
# LAB_ARGS passes more options (e.g. LAB_ARGS=--port=9999).
LAB_STAMP := $(VENV)/.lab-installed
$(LAB_STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[lab]'
	touch $(LAB_STAMP)

lab: $(LAB_STAMP)
	@if [ -z "$$DISPLAY$$WAYLAND_DISPLAY" ] && [ "$$(uname)" != Darwin ]; then \
	  echo "No display: open the URL printed below (it carries the token) in a browser."; \
	  set -- --no-browser; fi; \
	if [ "$$(id -u)" = 0 ]; then set -- "$$@" --allow-root; fi; \
	exec $(VENV)/bin/jupyter lab notebooks/01-quickstart.ipynb \
	  --LabApp.default_url=/lab/tree/notebooks/01-quickstart.ipynb "$$@" $(LAB_ARGS)

demo: $(STAMP)
	$(PY) -m memlab.demo

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) build *.egg-info

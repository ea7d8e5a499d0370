# One command each: `make demo` (install + launch the Space on 127.0.0.1:7860, or PORT=) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: install install-test demo test bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# The CPU wheel first: an unpinned torch with none installed pulls a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[space]"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q -e ".[test]"
	# The browser test drives Debian's chromium (Playwright cannot download browsers here).
	command -v chromium >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

# `make demo PORT=8000` serves on another port (PORT in the environment does too).
demo: install
	$(PY) space/app.py $(if $(PORT),--port $(PORT))

test: install-test
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache build dist

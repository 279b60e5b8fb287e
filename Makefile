# Everything a fresh machine needs: `make demo` and `make test` install first, then run.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# Debian packages. What `make demo` needs: PortAudio's headers to build PyAudio, ALSA's pulse plugin
# (Debian's PortAudio reaches PulseAudio or PipeWire only through it), espeak-ng so the local server
# speaks real words.
DEMO_PACKAGES := portaudio19-dev libasound2-plugins espeak-ng
# What `make test` needs besides: tinyproxy for the proxy tests (a real HTTP CONNECT proxy on loopback),
# Chromium and its driver for the browser test of the Flask example,
# pactl/parec, and a PulseAudio daemon for the null-sink playback tests, unless a pulse server already
# answers (a desktop's PipeWire: installing pulseaudio there would remove pipewire-audio), which the
# tests then use.
TEST_PACKAGES := tinyproxy pulseaudio-utils chromium chromium-driver $(shell \
	if pactl info >/dev/null 2>&1 || dpkg-query -W -f='$${Status}' pipewire-pulse 2>/dev/null | grep -q "ok installed"; \
	then :; else echo pulseaudio; fi)
# Also installed, only when what they provide is missing (python3 and the compiler may come from
# elsewhere, e.g. pyenv, so these are checked by file/command, not by package name):
#   gcc libc6-dev  PyAudio has no Linux wheel, so pip compiles it (libc6-dev: only a Recommends of gcc).
#   python3-dev    Python.h for that compile. Only for Debian's own python (include dir under
#                  /usr/include): for any other interpreter the Debian package would not help.
#   python3-venv   Debian's python3 has no ensurepip without it, so `python3 -m venv` fails.
#   python3        when there is no $(PYTHON) at all (then also python3-dev and python3-venv).
# apt-get runs as root, or through sudo (`env` keeps DEBIAN_FRONTEND, which sudo would drop), and never
# removes a package: on a conflict it stops and says what to install by hand.
SUDO := $(shell if [ "$$(id -u)" = 0 ]; then :; elif command -v sudo >/dev/null; then echo sudo; else echo none; fi)

.PHONY: install install-dev system-deps test demo lint bench docs dist clean

# `make demo`: the package with playback and the local server; `make test`: the dev tools too.
install: $(VENV)/.installed
install-dev: $(VENV)/.dev-installed

$(VENV)/.installed: setup.cfg setup.py
	@$(MAKE) --no-print-directory system-deps PACKAGES="$(DEMO_PACKAGES)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[play,server]'
	@touch $@

$(VENV)/.dev-installed: setup.cfg setup.py $(VENV)/.installed
	@$(MAKE) --no-print-directory system-deps PACKAGES="$(TEST_PACKAGES)"
	$(PY) -m pip install --quiet -e '.[play,server,dev]'
	@touch $@

system-deps:
	@missing=""; \
	for p in $(PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	command -v cc >/dev/null || command -v gcc >/dev/null || missing="$$missing gcc libc6-dev"; \
	if ! command -v $(PYTHON) >/dev/null; then \
	  missing="$$missing python3 python3-dev python3-venv"; \
	else \
	  inc=$$($(PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["include"])'); \
	  case "$$inc" in /usr/include/*) deb_py=1;; *) deb_py=;; esac; \
	  if [ ! -f "$$inc/Python.h" ]; then \
	    if [ -n "$$deb_py" ]; then missing="$$missing python3-dev"; \
	    else echo "Warning: no Python.h in $$inc: PyAudio will not build; install $(PYTHON)'s headers" >&2; fi; \
	  fi; \
	  if ! $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null; then \
	    if [ -n "$$deb_py" ]; then missing="$$missing python3-venv"; \
	    else echo "Warning: $(PYTHON) has no ensurepip/venv: '$(PYTHON) -m venv' will fail" >&2; fi; \
	  fi; \
	fi; \
	if [ -n "$$missing" ]; then \
	  if ! command -v apt-get >/dev/null; then \
	    echo "Please install with your package manager (Debian names):$$missing" >&2; exit 1; \
	  elif [ "$(SUDO)" = none ]; then \
	    echo "Installing$$missing needs root, and there is no sudo: run as root 'apt-get install$$missing'," \
	         "then make again." >&2; exit 1; \
	  fi; \
	  echo "Installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --no-remove \
	    $$missing >/dev/null || { \
	    echo "apt-get could not install$$missing without removing other packages (or failed; see above)." \
	         "Nothing was removed. Install them by hand, then make again." >&2; exit 1; }; \
	fi

# The transport, protocol and local-server tests run again on the oldest websocket-client, websockets,
# python-dotenv and pysbd that setup.cfg allows (its `>=` floors), in a venv of their own, on the oldest
# Python it allows (python_requires) when this machine has it on PATH or as a pyenv version, else $(PYTHON).
OLDEST_VENV := .venv-oldest
OLDEST_PYTHON_VERSION := $(shell sed -n 's/^python_requires = >=\([0-9.]*\).*/\1/p' setup.cfg)
OLDEST_PYTHON ?= $(firstword $(foreach p,python$(OLDEST_PYTHON_VERSION) \
	$(wildcard $(HOME)/.pyenv/versions/$(OLDEST_PYTHON_VERSION).*/bin/python$(OLDEST_PYTHON_VERSION)),\
	$(shell $(p) -c '' 2>/dev/null && echo $(p))) $(PYTHON))
OLDEST_STAMP := $(OLDEST_VENV)/.installed-$(notdir $(OLDEST_PYTHON))
OLDEST := $(shell sed -n 's/^ *\(websocket-client\|websockets\|python-dotenv\|pysbd\|h11\)>=\([0-9.]*\).*/\1==\2/p' setup.cfg | sort -u)
OLDEST_TESTS := tests/test_protocol.py tests/test_qwen3_protocol.py tests/test_orpheus_http_protocol.py tests/test_transport.py tests/test_local_server.py tests/test_sending.py \
	tests/test_proxy.py tests/test_trace.py tests/test_drivers.py tests/test_errors.py \
	tests/test_recovery.py::test_a_cut_anywhere_is_mended_byte_for_byte \
	tests/test_recovery.py::test_a_path_gone_silent_is_found_by_read_timeout_and_recovered

# The tests wait far more than they compute (servers paced in real time, sound played): TEST_WORKERS
# processes run them side by side (pytest-xdist), each with its own PulseAudio daemon and servers.
TEST_WORKERS ?= 2
test: install-dev $(OLDEST_STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal
	@echo "Again on the oldest dependencies allowed: $(OLDEST), on $$($(OLDEST_VENV)/bin/python -V)"
	$(OLDEST_VENV)/bin/python -m pytest -p no:cacheprovider -n $(TEST_WORKERS) --dist worksteal $(OLDEST_TESTS)

$(OLDEST_STAMP): setup.cfg setup.py $(VENV)/.dev-installed
	$(OLDEST_PYTHON) -m venv --clear $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(OLDEST_VENV)/bin/python -m pip install --quiet $(OLDEST) 'pytest>=7' 'hypothesis>=6' 'pytest-timeout>=2.1' \
	  'pytest-xdist>=3.2'
	$(OLDEST_VENV)/bin/python -m pip install --quiet --no-deps -e .
	@touch $@

demo: install
	$(BIN)/basetts say --local --fallback-output basetts-demo.wav "Hello! This is basetts, speaking through a local test server."

# `make bench`: docs/performance.md and .png (~36 minutes); `make bench QUICK=1`: a smoke run of ~8 minutes
# written to build/bench-quick/ instead.
bench: install-dev $(VENV)/.bench-installed
	$(PY) -m bench $(if $(QUICK),--quick)

$(VENV)/.bench-installed: setup.cfg setup.py
	$(PY) -m pip install --quiet -e '.[play,server,dev,bench]'
	@touch $@

lint: install-dev
	$(BIN)/ruff check basetts tests bench examples docs
	$(BIN)/mypy basetts examples

# `make dist`: the sdist and the wheel in dist/, checked by twine (tests/test_dist.py installs the wheel
# into a fresh venv).
dist: install-dev
	rm -rf dist
	$(PY) -m build --outdir dist .
	$(PY) -m twine check --strict dist/*

clean:
	rm -rf $(VENV) $(OLDEST_VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache

docs: install
	$(PY) docs/make_api.py

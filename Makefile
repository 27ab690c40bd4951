# maskclip_ros: every setup step is a file target, so a second `make setup` with nothing changed does nothing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
BUILD := build/standalone
INTERFACES := $(wildcard msg/*.msg srv/*.srv) CMakeLists.txt package.xml

.PHONY: setup test demo clean help
help:
	@echo "make demo  - set up .venv and run the demo"
	@echo "make test  - set up .venv and run the test suite"
	@echo "make setup - only set up .venv (idempotent)"

setup: $(VENV)/.editable

# 1. Virtual environment with every dependency pinned (requirements.txt, constraints.txt).
$(VENV)/.deps: requirements.txt constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q "pip==25.3"
	$(PIP) install -q -r requirements.txt -c constraints.txt
	@touch $@

# 2. The msg/srv interfaces, built by CMake (ament_cmake + rosidl) into the environment's prefix.
$(VENV)/.interfaces: $(VENV)/.deps $(INTERFACES)
	scripts/build_interfaces.sh $(VENV) $(BUILD)
	@touch $@

# 3. The project itself, editable.
$(VENV)/.editable: $(VENV)/.interfaces setup.py
	$(PIP) install -q --no-deps --no-build-isolation -e . --config-settings editable_mode=compat
	@touch $@

test: setup
	$(VENV)/bin/pytest

demo: setup
	@echo "make demo arrives with the demo issue; the setup is done."

clean:
	rm -rf $(VENV) build install log

# maskclip_ros: every setup step is a file target, so a second `make setup` with nothing changed does nothing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
BUILD := build/standalone
INTERFACES := $(wildcard msg/*.msg srv/*.srv) CMakeLists.txt package.xml

.PHONY: setup setup-mmdet test demo clean help
help:
	@echo "make demo  - set up .venv and run the demo"
	@echo "make test  - set up .venv and run the test suite"
	@echo "make setup - only set up .venv (idempotent)"
	@echo "make setup-mmdet - add mmcv (built once, cached in ~/.cache/maskclip_ros), mmengine, mmdet"

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

# 4. mmdet for the `mmdet` proposal backend: mmcv 2.1.0 built with ops for the pinned torch (~12 min on
#    2 cores the first time; the wheel is cached outside the repository, so later setups take seconds).
setup-mmdet: $(VENV)/.mmdet
$(VENV)/.mmdet: $(VENV)/.editable requirements-mmdet.txt constraints.txt scripts/setup_mmdet.sh
	scripts/setup_mmdet.sh $(VENV)
	@touch $@

test: setup setup-mmdet
	$(VENV)/bin/pytest

# The main job: rosbag in, labelled bag + overlays + summary out (out/demo). BAG=path TOPIC=/camera/... to
# replay your own bag instead of the generated one.
BAG ?=
TOPIC ?= /camera/image_raw
demo: setup
	$(VENV)/bin/maskclip-ros demo $(if $(BAG),--bag $(BAG)) --topic $(TOPIC)

clean:
	rm -rf $(VENV) build install log

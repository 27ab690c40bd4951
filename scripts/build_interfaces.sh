#!/usr/bin/env bash
# Build the maskclip_ros interfaces with CMake (ament_cmake + rosidl) and install them into a virtual
# environment that holds the ROS 2 PyPI wheels, which makes the venv an ament prefix.
# Usage: scripts/build_interfaces.sh VENV BUILD_DIR
set -euo pipefail
venv=$(cd "$1" && pwd)
build=$2
py="$venv/bin/python"
site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p "$build"
export PATH="$venv/bin:$PATH" AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
  -DCMAKE_INSTALL_PREFIX="$venv" -DCMAKE_PREFIX_PATH="$venv" -DPython3_EXECUTABLE="$py" \
  -DMASKCLIP_INSTALL_PYTHON=OFF > "$build.configure.log" 2>&1 \
  || { cat "$build.configure.log"; echo "interface configure failed (log: $build.configure.log)" >&2; exit 1; }
cmake --build "$build" -j "$(nproc)" > "$build.build.log" 2>&1 \
  || { tail -50 "$build.build.log"; echo "interface build failed (log: $build.build.log)" >&2; exit 1; }
cmake --install "$build" > "$build.install.log" 2>&1 \
  || { tail -20 "$build.install.log"; echo "interface install failed (log: $build.install.log)" >&2; exit 1; }
# The generated half of the package must not shadow the editable source package: drop its empty
# __init__.py and its egg-info (pip would take it for the project's own distribution).
rm -f "$site/maskclip_ros/__init__.py"
rm -rf "$site"/maskclip_ros-*.egg-info
echo "interfaces installed into $venv"

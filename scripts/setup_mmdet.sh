#!/usr/bin/env bash
# Install mmcv (with compiled ops), mmengine and mmdet into the project's venv, pinned.
#
#   scripts/setup_mmdet.sh VENV
#
# mmcv 2.1.0 (the newest that mmdet 3.3.0 accepts) has no wheel for the pinned torch, so it is built from
# its source package once (about 12.5 min on 2 cores) with:
#   MMCV_WITH_OPS=1, setuptools<81, --no-build-isolation (it compiles against the venv's torch) and its
#   hard-coded -std=c++17 changed to -std=c++20 (the torch 2.14 headers need C++20).
# The built wheel is cached outside the repository, keyed by mmcv/torch/python/cpu-or-cuda, in
#   ${MASKCLIP_ROS_CACHE:-${XDG_CACHE_HOME:-~/.cache}/maskclip_ros}/wheels/
# so later setups on the same machine reinstall it in seconds. The script checks that it changes no
# package already in the venv (numpy, opencv-python, torch, ...): it only adds packages.
set -euo pipefail

VENV=${1:?usage: scripts/setup_mmdet.sh VENV}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
MMCV_VERSION=2.1.0          # also pinned in constraints.txt
NINJA_VERSION=1.13.2        # build tool only, installed beside the cache (not into the venv)
SETUPTOOLS_BUILD=79.0.1     # mmcv 2.1.0's setup.py needs setuptools<81 (and colcon-core <80)
CACHE=${MASKCLIP_ROS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/maskclip_ros}

die() { echo "setup-mmdet: ERROR: $*" >&2; exit 1; }
log() { echo "setup-mmdet: $*"; }

[ -x "$PY" ] || die "no python at $PY: run 'make setup' first"

# Which build of mmcv fits this venv: torch version, python tag, and whether CUDA ops get compiled.
read -r TORCH_VERSION PYTAG VARIANT < <("$PY" - <<'EOF'
import os, sys, torch
cuda = torch.cuda.is_available() or os.environ.get("FORCE_CUDA", "0") == "1"
print(torch.__version__.replace("+", "_"), f"cp{sys.version_info.major}{sys.version_info.minor}",
      "cuda" if cuda else "cpu")
EOF
)
KEY="mmcv-${MMCV_VERSION}_torch-${TORCH_VERSION}_${PYTAG}_${VARIANT}"
WHEEL_DIR="$CACHE/wheels/$KEY"
mkdir -p "$CACHE/wheels" "$CACHE/logs"

freeze() { "${PIP[@]}" freeze --exclude-editable | LC_ALL=C sort; }
BEFORE=$(mktemp); AFTER=$(mktemp)
trap 'rm -f "$BEFORE" "$AFTER"' EXIT
freeze > "$BEFORE"

mmcv_ops_ok() {  # mmcv imports mmengine: call after requirements-mmdet.txt is installed
  "$PY" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV_VERSION'; from mmcv.ops import nms, roi_align" \
    >/dev/null 2>&1
}

mmcv_installed() {  # the right version is installed (metadata only: importing mmcv needs mmengine)
  "$PY" -c "import importlib.metadata as m; assert m.version('mmcv') == '$MMCV_VERSION'" >/dev/null 2>&1
}

build_wheel() {
  local work logf started
  work=$(mktemp -d "$CACHE/build.XXXXXX")
  logf="$CACHE/logs/$KEY.log"
  started=$(date +%s)
  log "building mmcv $MMCV_VERSION for torch $TORCH_VERSION ($VARIANT); takes ~12 min on 2 cores; log: $logf"
  # Build tools go to folders of their own, put first on PYTHONPATH / PATH for this build only.
  local tools="$CACHE/buildtools/setuptools-${SETUPTOOLS_BUILD}_ninja-${NINJA_VERSION}"
  if [ ! -f "$tools/.done" ]; then
    "${PIP[@]}" install -q --target "$tools" "setuptools==$SETUPTOOLS_BUILD" "ninja==$NINJA_VERSION" \
      || die "could not install the build tools (setuptools==$SETUPTOOLS_BUILD, ninja==$NINJA_VERSION)"
    touch "$tools/.done"
  fi
  "${PIP[@]}" download -q --no-deps --no-binary :all: --no-build-isolation "mmcv==$MMCV_VERSION" -d "$work" \
    > "$logf" 2>&1 || die "could not download the mmcv $MMCV_VERSION source package (see $logf)"
  tar -xzf "$work/mmcv-$MMCV_VERSION.tar.gz" -C "$work"
  local src="$work/mmcv-$MMCV_VERSION"
  grep -q -- "-std=c++17" "$src/setup.py" || die "mmcv's setup.py has no -std=c++17 to patch: unexpected source"
  sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
  if ! env PYTHONPATH="$tools${PYTHONPATH:+:$PYTHONPATH}" PATH="$tools/bin:$PATH" \
        MMCV_WITH_OPS=1 MAX_JOBS="${MMCV_MAX_JOBS:-$(nproc)}" \
        "${PIP[@]}" wheel -v --no-build-isolation --no-deps -w "$work/dist" "$src" >> "$logf" 2>&1; then
    tail -n 30 "$logf" >&2
    die "building mmcv $MMCV_VERSION failed (full log: $logf). Needs a C++20 compiler (g++ >= 10) and the venv's torch headers."
  fi
  mkdir -p "$WHEEL_DIR.partial"
  cp "$work"/dist/mmcv-*.whl "$WHEEL_DIR.partial/"
  rm -rf "$WHEEL_DIR" && mv "$WHEEL_DIR.partial" "$WHEEL_DIR"
  rm -rf "$work"
  log "built and cached $(ls "$WHEEL_DIR") in $(( $(date +%s) - started )) s"
}

install_cached_wheel() {
  local wheel
  wheel=$(ls "$WHEEL_DIR"/mmcv-*.whl 2>/dev/null | head -n 1)
  [ -n "$wheel" ] || return 1
  "${PIP[@]}" install -q --no-deps --force-reinstall "$wheel"
}

install_mmdet() {  # mmengine, mmdet and their dependencies, pinned (mmcv is already there: nothing is rebuilt)
  "${PIP[@]}" install -q -r "$HERE/requirements-mmdet.txt" -c "$HERE/constraints.txt" \
    || die "pip could not install requirements-mmdet.txt"
}

T0=$(date +%s)
if mmcv_installed; then
  log "mmcv $MMCV_VERSION already installed"
elif install_cached_wheel; then
  log "installed the cached mmcv wheel from $WHEEL_DIR"
else
  build_wheel
  install_cached_wheel || die "could not install the freshly built mmcv wheel from $WHEEL_DIR"
fi
install_mmdet
if ! mmcv_ops_ok; then  # a broken cached wheel (e.g. built against another torch build): rebuild once
  log "mmcv's compiled ops do not load: rebuilding the wheel"
  rm -rf "$WHEEL_DIR"
  build_wheel
  install_cached_wheel && mmcv_ops_ok \
    || die "mmcv $MMCV_VERSION's ops do not load even after a rebuild; see $CACHE/logs/$KEY.log"
fi
"$PY" -c "import mmdet, mmdet.models, mmengine; from mmdet.apis import init_detector" \
  || die "mmdet does not import after installation"

# Only additions are allowed: a changed or removed line means mmdet replaced part of the project's venv.
freeze > "$AFTER"
CHANGED=$(LC_ALL=C comm -23 "$BEFORE" "$AFTER" | grep -v '^mmcv==' || true)
if [ -n "$CHANGED" ]; then
  echo "$CHANGED" >&2
  die "installing mmdet changed or removed the packages above; pin them in constraints.txt"
fi
ADDED=$(LC_ALL=C comm -13 "$BEFORE" "$AFTER" | tr '\n' ' ')
log "done in $(( $(date +%s) - T0 )) s; added: ${ADDED:-nothing}"

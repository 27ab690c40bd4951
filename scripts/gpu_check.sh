#!/usr/bin/env bash
# The GPU check of issue 13 (maskclip_ros.bench.gpu): on a machine with a CUDA GPU, in one run of at most
# 8 minutes, frames per second of torch fp16 (and fp32) in tokens and rma mode and of the exported encoder
# under ONNX Runtime's TensorRT / CUDA providers, ViT-B-16 and ViT-L-14-336 at 640x480 with M = 100, each
# with its parity against CPU fp32 on the same inputs. Writes gpu_check.json into $OUT (or --out DIR, else
# out/gpu_check).
#
#   scripts/gpu_check.sh [--out DIR] [--dry-run] [options of python -m maskclip_ros.bench.gpu]
#
# Without a usable NVIDIA GPU it says so and exits 2 (nothing measured). --dry-run runs the python part on the
# CPU with the tiny test CLIP (the logic, no GPU needed; no install attempted). When the venv's onnxruntime
# has no CUDA provider, onnxruntime-gpu is installed (time-limited) into a side folder under the output
# directory that only this run puts on PYTHONPATH: the venv itself is left as it is.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$REPO/.venv/bin/python}"
LIMIT_S="${GPU_CHECK_LIMIT_S:-470}"     # the whole run, seconds (under 8 minutes)
PIP_LIMIT_S=90                          # the onnxruntime-gpu install attempt, seconds
REPORT_MARGIN_S=20                      # seconds kept for the python part to write its JSON
ORT_GPU="onnxruntime-gpu==1.31.1"       # pinned; CUDA 12 build (needs the CUDA 12 / cuDNN 9 libraries)
NO_GPU_EXIT=2

out="${OUT:-$REPO/out/gpu_check}"
dry_run=0
args=()
while (($#)); do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --dry-run) dry_run=1; args+=("$1"); shift ;;
    *) args+=("$1"); shift ;;
  esac
done

if ((dry_run == 0)); then
  if ! command -v nvidia-smi >/dev/null 2>&1 || ! gpus="$(nvidia-smi -L 2>/dev/null)" || [[ -z "$gpus" ]]; then
    echo "gpu_check: no CUDA GPU on this machine (nvidia-smi lists none): nothing measured." \
         "Run it on a machine with an NVIDIA GPU, or with --dry-run to check the logic on the CPU." >&2
    exit "$NO_GPU_EXIT"
  fi
  echo "$gpus"
fi
mkdir -p "$out"
cd "$REPO" || exit 1

has_cuda_provider() {
  "$PY" -c "import onnxruntime, sys; sys.exit('CUDAExecutionProvider' not in onnxruntime.get_available_providers())" \
    2>/dev/null
}
if ((dry_run == 0)) && ! has_cuda_provider; then
  side="$out/onnxruntime-gpu"
  if timeout "$PIP_LIMIT_S" "$PY" -m pip install --disable-pip-version-check -q --no-deps --target "$side" \
       "$ORT_GPU" >"$out/pip.log" 2>&1; then
    export PYTHONPATH="$side${PYTHONPATH:+:$PYTHONPATH}"
    echo "gpu_check: $ORT_GPU installed into $side for this run"
  else
    echo "gpu_check: $ORT_GPU could not be installed within ${PIP_LIMIT_S} s (see $out/pip.log); the exported" \
         "encoder runs on the providers this onnxruntime has" >&2
  fi
fi

left=$((LIMIT_S - SECONDS))
timeout --kill-after=10 "$left" "$PY" -m maskclip_ros.bench.gpu --out "$out" \
  --budget-s "$((left - REPORT_MARGIN_S))" "${args[@]}"
status=$?
if ((status == 124)); then
  echo "gpu_check: stopped at the ${LIMIT_S} s limit; $out/gpu_check.json holds the models finished by then" >&2
fi
exit "$status"

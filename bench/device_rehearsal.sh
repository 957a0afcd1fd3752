#!/usr/bin/env bash
# Rehearse bench/gpu_session.py as the GPU machine would run it, on this CPU: a Python 3.12 virtual environment
# with only what shared/platform.md §5 says that machine has (torch 2.11, numpy 2.5, transformers 5.17, ...), the
# carried wheels installed with --target as on the machine, and the code imported from a copy of HEAD (no .git,
# no editable install). Catches a wheel missing from .whl/ or code that needs a newer torch before device time is
# spent. Needs python3.12 (pyenv here) and the registries; about 6 GB and 5 minutes the first time.
#   bash bench/device_rehearsal.sh            # tiny preset, 60 steps, bf16 + torch.compile, ~3 minutes
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$(command -v python3.12 || echo /root/.pyenv/versions/3.12.1/bin/python)}
ENV=${ENV:-/tmp/device-env}; SITE=$ENV-site; REPO=$ENV-repo; OUT=$ENV-out
test -d .whl || bash bench/fetch_wheels.sh
if [ ! -x "$ENV/bin/python" ]; then
  "$PY" -m venv "$ENV"
  "$ENV/bin/pip" install -q "torch==2.11.*" "numpy==2.5.*" "transformers==5.17.*" einops jaxtyping pandas \
    scikit-learn numba safetensors tokenizers xarray pyarrow tqdm
fi
rm -rf "$REPO" "$SITE" "$OUT" && mkdir -p "$REPO" && git archive HEAD | tar x -C "$REPO" && cp -r .whl "$REPO/"
cd "$REPO"
S=$(date +%s)
"$ENV/bin/python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
PYTHONPATH="$SITE:$PWD" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 SERPENT_COMMIT=$(git -C "$OLDPWD" rev-parse HEAD) \
  "$ENV/bin/python" bench/gpu_session.py --preset tiny --set train.steps=60 --set train.compile=yes \
  --set train.precision=bf16 --set llc.sampler.precision=bf16 --set susceptibility.sampler.precision=bf16 \
  --set susceptibility.sampler.draws=10 --deadline 280 --started-at "$S" --export "$OUT" --out "$ENV-run"
# the parts must unpack and load with this machine's own environment
rm -rf "$ENV-load" && mkdir -p "$ENV-load/artifacts" && cat "$OUT"/full.tgz.part* | tar xz -C "$ENV-load/artifacts"
cd "$ENV-load" && python3 -c "from serpent.artifacts import load_artifacts; r = load_artifacts('full', root='.'); \
print('loaded here:', r, 'commit', __import__('json').load(open('artifacts/full/manifest.json'))['commit'])"

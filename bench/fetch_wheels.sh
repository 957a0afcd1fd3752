#!/usr/bin/env bash
# Download the wheels the GPU machine lacks (shared/platform.md §5, plus what the stage charts need) into the
# ignored folder .whl/, for `bench/gpu_session.py` (carry `.whl`). About 51 MB; needs the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
plat="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $plat -d .whl \
  transformer-lens==3.9.0 better-abc==0.0.3 fancy-einsum==0.0.3 beartype==0.23.1 typeguard==4.6.1 \
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 xxhash==3.6.0 \
  devinterp==2.0.1 pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2 \
  zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 msgspec==0.22.0 google-crc32c==1.9.0 \
  umap-learn==0.5.12 pynndescent==0.7.0 \
  altair==6.3.0 vl-convert-python==1.9.0.post1 narwhals==2.29.0 jinja2==3.1.6 jsonschema==4.26.0 \
  jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==0.30.0 attrs==26.1.0
# transformers-stream-generator has no wheel on PyPI: build one from its sdist
python3 -m pip wheel -q --no-deps transformers-stream-generator==0.0.5 -w .whl
ls .whl | wc -l
du -sh .whl

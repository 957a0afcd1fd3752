#!/usr/bin/env bash
# Build the book offline: vendor the page assets, then run Jupyter Book with warnings as errors.
# The one build command used by the README, CI (.ci/run), tests/test_book.py and .github/workflows/book.yml.
#   bash book/_scripts/build.sh                 # -> _build/html
#   SERPENT_FAST=1 bash book/_scripts/build.sh  # notebooks in fast mode (CI)
#   bash book/_scripts/build.sh --path-output /tmp/out   # extra arguments go to `jupyter-book build`
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-1}"
python book/_scripts/vendor_assets.py
exec jupyter-book build . -W -n --keep-going "$@"

#!/usr/bin/env bash
# Runs the decode + detect fuzz target for a bounded time (CI: FUZZ_SECONDS, default 60).
# Needs nightly Rust and cargo-fuzz (scripts/setup installs cargo-fuzz into .ci/tools),
# the models (scripts/setup) and, for seeds, the dlib photos (scripts/fetch-testdata).
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(cd .. && pwd)
export PATH="$ROOT/.ci/tools/bin:$PATH"
export FACEWIRE_MODEL_DIR="${FACEWIRE_MODEL_DIR:-$ROOT/models}"
CORPUS=corpus/decode_detect
mkdir -p "$CORPUS"
# Seeds: a few small real photos (kept out of git; the corpus dir is ignored).
if [ -d "$ROOT/testdata/dlib/johns" ] && [ -z "$(ls -A "$CORPUS")" ]; then
  find "$ROOT/testdata/dlib/johns" -name '*.jpg' | sort | head -n 5 | xargs -I{} cp {} "$CORPUS/"
fi
exec cargo +nightly fuzz run decode_detect "$CORPUS" -- \
  -max_total_time="${FUZZ_SECONDS:-60}" -rss_limit_mb=4096 -timeout=10 -max_len=65536

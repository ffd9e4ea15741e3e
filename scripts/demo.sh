#!/usr/bin/env bash
# The main job: set everything up, then run the default comparison on the simulator:
# ECMP + PFC + DCQCN vs HPCC vs GSE on a ring all-reduce hit by an incast (experiment (c)).
# Writes results/<experiment>-compare/ with one directory per scheme (results, plots,
# report.html) and index.html, the side-by-side page; a second run replaces the first one's
# results (--force: only ever a fabriclab result, never other files).  Extra arguments go to
# `fabriclab compare` (e.g. --reduced for a quick version).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/fabriclab" compare experiments/allreduce_incast.yaml --force "$@"

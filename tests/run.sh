#!/usr/bin/env bash
# Install everything the tests need into ./env and run the whole suite:
#   bash tests/run.sh [pytest args]
# Python deps (requirements-dev.txt) go into the venv ./env (the same one Pinokio's
# install.js makes); Node deps (pinokiod, for the launcher tests) via npm ci; the browser
# tests use Debian's chromium and the bundled WordNet dataset's rebuild test Debian's wordnet-base,
# installed here when running as root.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if { ! command -v chromium >/dev/null 2>&1 || [ ! -f /usr/share/wordnet/data.noun ]; } && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium wordnet-base >/dev/null
fi
[ -x env/bin/python ] || "$PY" -m venv env
env/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; fi
export PATH="$PWD/env/bin:$PATH" GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec env/bin/python -m pytest "$@"

#!/bin/sh
# Runs the web client's tests: the unit tests of its model, controller and
# session (node alone) and the end-to-end test of web/ against a real parleyd
# in headless Chromium (node's test runner).
#   PARLEYD=build/server/parleyd PARLEY_SOURCE=. tests/browser/run.sh
# Needs node >= 20, Debian's chromium (or CHROMIUM=/path), and npm for the
# first run (installs playwright-core into tests/browser/node_modules).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
: "${PARLEYD:?set PARLEYD to the parleyd binary}"
PARLEYD=$(cd "$(dirname "$PARLEYD")" && pwd)/$(basename "$PARLEYD")
PARLEY_SOURCE=$(cd "${PARLEY_SOURCE:-$here/../..}" && pwd)
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
export PARLEYD PARLEY_SOURCE CHROMIUM

if [ ! -x "$PARLEYD" ]; then
    echo "run.sh: parleyd not found at $PARLEYD" >&2
    exit 1
fi
if [ ! -x "$CHROMIUM" ]; then
    echo "run.sh: no browser at $CHROMIUM (apt-get install -y chromium, or set CHROMIUM)" >&2
    exit 1
fi
command -v node >/dev/null || { echo "run.sh: node not found" >&2; exit 1; }

cd "$here"
if [ ! -f node_modules/playwright-core/package.json ]; then
    npm install --no-audit --no-fund --loglevel=error
fi
mkdir -p out
exec node --test model.test.mjs controller.test.mjs session.test.mjs e2e.test.mjs

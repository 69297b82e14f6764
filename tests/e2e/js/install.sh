#!/usr/bin/env bash
# Installs the JavaScript OpenFeature clients of the end-to-end tests (package-lock.json) into
# node_modules with `npm ci`, only when node_modules is missing or was installed from another
# lock file. Run by .ci/run and by tests/e2e/test_e2e_openfeature.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
stamp=node_modules/.lab-lock-sha256
wanted="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
  exit 0
fi
npm ci --no-audit --no-fund --loglevel=error
echo "$wanted" >"$stamp"

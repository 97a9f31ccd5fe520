#!/usr/bin/env bash
# docs/configuration.md must list exactly the options the binaries have: it is
# regenerated from their --help and compared with the committed page.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${1:?usage: test_docs.sh BIN_DIR}
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
ARV_CONFIG_DOC_OUT=$tmp "$root/scripts/config-doc.sh" "$bin" >/dev/null
if ! diff -u "$root/docs/configuration.md" "$tmp"; then
    echo "FAIL: docs/configuration.md is stale: run scripts/config-doc.sh" >&2
    exit 1
fi
echo "PASS: docs/configuration.md matches the binaries' options"

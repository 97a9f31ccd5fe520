#!/usr/bin/env bash
# Runs every test: installs missing packages, builds with ASan/UBSan (warnings are
# errors), runs the unit tests and the integration tests (which start their own
# Redis and PostgreSQL servers on free ports). Usage: scripts/test.sh [ctest args]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/lib/servers.sh"

arv_install_packages
build=${ARV_TEST_BUILD_DIR:-$root/build-test}
# One run per build folder: two would build the same objects at once, and
# each would empty the other's sanitizer reports.
mkdir -p "$build"
exec 9>>"$build/.test.lock"
flock -n 9 || {
    arv_log "another scripts/test.sh runs in $build: wait for it, or set ARV_TEST_BUILD_DIR"
    exit 1
}
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Debug -DARV_SANITIZE=ON -DARV_WERROR=ON >/dev/null
cmake --build "$build" -j"$(nproc)"

# Everything runs under the sanitizers. Criterion's workers and the daemons'
# exit codes do not always carry a report, so reports go to files, and any file
# at all fails the run.
reports=$build/sanitizer-reports
rm -rf "$reports"
mkdir -p "$reports"
chmod 777 "$reports"
# (The paths quoted: the sanitizers split their options at spaces too.)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:strict_string_checks=1:log_path=\'$reports/asan\'}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:log_path=\'$reports/ubsan\'}
cd "$build"
rc=0
ctest --output-on-failure --timeout 600 "$@" 9>&- || rc=$?
# Servers and daemons of a test killed past its timeout (no trap ran).
. "$root/tests/integration/lib.sh"
it_sweep
if compgen -G "$reports/*" >/dev/null; then
    echo "sanitizer reports:" >&2
    cat "$reports"/* >&2
    rc=1
fi
exit $rc

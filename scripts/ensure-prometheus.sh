#!/usr/bin/env bash
# Make sure `prometheus` and `promtool` are on PATH for the test suite (the alert-rule unit tests
# and the real-Prometheus dashboard test in tests/integration/test_observability.py).
# Installs the Debian/Ubuntu package `prometheus` (as root) if they are missing. The package's
# own service is stopped and disabled where systemd runs: the tests start their own Prometheus
# on a random loopback port and need nothing listening on 9090.
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Prometheus (apt-get install prometheus)…"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends prometheus >/dev/null \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends prometheus >/dev/null; }
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
else
  echo "prometheus and promtool are needed for the observability tests; install the Debian package" \
       "'prometheus' (or Prometheus' release binaries on PATH) and re-run" >&2
  exit 1
fi
command -v prometheus >/dev/null && command -v promtool >/dev/null

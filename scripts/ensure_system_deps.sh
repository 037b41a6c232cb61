#!/usr/bin/env bash
# Installs the Debian packages that tests and benchmarks use for real, when missing:
#   redis-server    feature cache and event stream tests (a real server on a loopback port)
#   chromium        renders the A/B report page headless in its test
#   docker-compose  validates docker-compose.yml (`docker-compose config`; no engine needed)
#   wrk             load generator of the serving benchmark
#   prometheus      promtool checks configs/monitoring/alerts.yml in its test
# Idempotent; needs root (or sudo) and the Debian mirror, which this project's machines reach.
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing Debian packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

#!/usr/bin/env bash
# promtool and prometheus for the metrics tests (test/metrics: promtool check metrics/rules,
# promtool test rules, a real Prometheus scraping the example app). Installs the Debian
# package `prometheus` when promtool is missing; says so when it cannot.
set -uo pipefail

if command -v promtool >/dev/null && command -v prometheus >/dev/null; then
  echo "=== metrics tools: $(promtool --version 2>&1 | head -1)"
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "=== metrics tools SKIPPED: no promtool/prometheus and no apt-get; the promtool and Prometheus tests will be skipped"
  exit 1
fi
echo "=== installing prometheus (Debian package: promtool + prometheus)"
if { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } >/dev/null 2>&1; then
  echo "=== metrics tools: $(promtool --version 2>&1 | head -1)"
else
  echo "=== metrics tools SKIPPED: apt-get install prometheus failed; the promtool and Prometheus tests will be skipped"
  exit 1
fi

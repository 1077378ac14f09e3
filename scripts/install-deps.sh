#!/usr/bin/env bash
# Installs the Debian 12 packages the build, tests and demo need, only those
# missing. Needs root (or sudo) when something is missing.
set -euo pipefail
pkgs=(
  g++ make                                  # build
  postgresql-15 postgresql-server-dev-15    # server, PGXS, pg_regress
  libgtest-dev libbenchmark-dev             # unit tests, benchmarks
  clang libclang-rt-14-dev                  # libFuzzer + sanitizers
  clang-format                              # formatting check
  libipc-run-perl                           # TAP tests (PostgreSQL::Test::Cluster)
  libyaml-cpp-dev                           # YAML configs
  libroaring-dev libpq-dev                  # the reference index and its verify tool
  time                                      # peak RSS in benchmarks (/usr/bin/time)
  prometheus prometheus-postgres-exporter curl  # promtool checks metrics(); the exporter setup is tested
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}"
sudo=()
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "error: run as root to install: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

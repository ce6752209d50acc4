#!/usr/bin/env bash
# Installs the Debian 12 packages multiproc needs to build, test and run its demo. Only missing
# packages are installed, so on a prepared machine this is silent and takes a fraction of a second.
# README.md ("Dependencies") says why each package is here.
set -euo pipefail

readonly PACKAGES=(
  cmake g++ make                     # toolchain
  libcaf-dev                         # actor runtime: pool supervisor, manager server
  libmsgpack-cxx-dev                 # wire format
  libssl-dev                         # HMAC and randomness for authkeys
  catch2                             # tests
  libspdlog-dev libfmt-dev           # logging
  libcli11-dev                       # demo command-line flags
  ccache                             # faster rebuilds (the build works without it)
  python3                            # interop tests and benchmarks against CPython
  pkgconf                            # the test of multiproc.pc
  dpkg-dev file                      # cpack -G DEB: dpkg-shlibdeps, and file to find the libraries
  iproute2                           # two-host tests in network namespaces
)

if ! command -v dpkg-query >/dev/null; then
  echo "setup-debian: this is not a Debian system; install the equivalents of: ${PACKAGES[*]}" >&2
  exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
  [[ $status == installed ]] || missing+=("$pkg")
done
((${#missing[@]} == 0)) && exit 0

as_root=()
if ((EUID != 0)); then
  if ! command -v sudo >/dev/null; then
    echo "setup-debian: run as root (or install sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
  as_root=(sudo)
fi

echo "setup-debian: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

#!/bin/sh
# First step of `npm test`: the Debian packages whose programs the tests run as real peers.
# Run as root (CI, a fresh machine of this kind), it installs the missing ones; otherwise it names them
# and the tests go on (the tests that need them fail, each saying what is missing).
# When everything is present it only looks (no apt-get update): well under a second.
set -eu
cd "$(dirname "$0")/.."

if [ ! -x node_modules/.bin/tsc ]; then
  echo "test/setup.sh: node_modules is not installed: run \`npm install\` (or \`npm ci\`) first" >&2
  exit 1
fi

need=""
# bench-h2load: roster bench's latencies against h2load's on the same server.
[ -x /usr/bin/h2load ] || need="$need nghttp2-client"
# interop: Python grpcio is the independent client; protoc generates its message modules.
/usr/bin/python3 -c "import grpc, google.protobuf" 2>/dev/null || need="$need python3-grpcio python3-protobuf"
[ -x /usr/bin/protoc ] || need="$need protobuf-compiler"
# http2/hpack: python's hpack is the independent implementation our HPACK round-trips against.
/usr/bin/python3 -c "import hpack" 2>/dev/null || need="$need python3-hpack"
# bench-report: roster bench's HTML report is opened in headless Chromium.
[ -x /usr/bin/chromium ] || need="$need chromium"
# roster/transfer's heartbeats: nginx with grpc_read_timeout is the proxy that cuts quiet calls.
[ -x /usr/sbin/nginx ] || need="$need nginx"
# etcd discovery and registration: a real etcd server, started by the tests on loopback ports.
[ -x /usr/bin/etcd ] || need="$need etcd-server"

[ -z "$need" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "test/setup.sh: installing the Debian packages the tests need:$need" >&2
  log=$(mktemp)
  # shellcheck disable=SC2086 # one word per package
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need; } \
    >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "test/setup.sh: apt-get could not install:$need" >&2
    exit 1
  fi
  rm -f "$log"
  echo "test/setup.sh: installed:$need" >&2
else
  echo "test/setup.sh: MISSING Debian packages the tests need:$need" >&2
  echo "test/setup.sh: install them as root (apt-get install$need); until then the tests that use them fail" >&2
fi

#!/usr/bin/env bash
# A bandwidth-limited test bed on one machine: N "zones", each a network namespace joined to a hub
# namespace's bridge by a veth pair whose both ends are rate-limited with tc tbf (netem is not in
# every kernel). Traffic between zones crosses two limited links; inside a zone it is loopback speed.
# Only addresses inside the namespaces this script creates are used (10.231.0.0/24).
#
#   hack/testbed.sh up [ZONES=2] [RATE=1gbit]   create tensile-tb-hub and tensile-tb-z0..z(N-1)
#   hack/testbed.sh addr ZONE                   the zone's address (10.231.0.(10+ZONE))
#   hack/testbed.sh exec ZONE CMD...            run CMD inside the zone's namespace
#   hack/testbed.sh check                       measure zone 0 → zone 1 throughput with node
#   hack/testbed.sh down                        delete every namespace it created
# Needs root (ip netns, tc). Idempotent: `up` first tears down what a previous run left.
set -euo pipefail

PREFIX=tensile-tb
HUB=$PREFIX-hub
SUBNET=10.231.0

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "testbed: needs root for ip netns and tc (run it with sudo)" >&2
    exit 2
  fi
}

zone_ns() { echo "$PREFIX-z$1"; }
zone_addr() { echo "$SUBNET.$((10 + $1))"; }

down() {
  for ns in $(ip netns list | awk '{print $1}' | grep "^$PREFIX-" || true); do
    ip netns delete "$ns"
  done
}

up() {
  local zones=${1:-2} rate=${2:-1gbit}
  down
  ip netns add "$HUB"
  ip -n "$HUB" link set lo up
  ip -n "$HUB" link add br0 type bridge
  ip -n "$HUB" link set br0 up
  for ((z = 0; z < zones; z++)); do
    local ns
    ns=$(zone_ns "$z")
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    # Created inside the zone, its peer moved to the hub: no interface ever lives in the host's namespace.
    ip -n "$ns" link add eth0 type veth peer name "z$z" netns "$HUB"
    ip -n "$ns" addr add "$(zone_addr "$z")/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$HUB" link set "z$z" master br0
    ip -n "$HUB" link set "z$z" up
    # Both directions: the zone's egress and the hub's egress towards the zone.
    ip netns exec "$ns" tc qdisc replace dev eth0 root tbf rate "$rate" burst 256kb latency 50ms
    ip netns exec "$HUB" tc qdisc replace dev "z$z" root tbf rate "$rate" burst 256kb latency 50ms
  done
  echo "testbed: $zones zones at $rate each way ($(zone_addr 0) … $(zone_addr $((zones - 1))))"
}

check() {
  local port=5201 bytes=$((256 * 1024 * 1024))
  local here
  here=$(cd "$(dirname "$0")/.." && pwd)
  ip netns exec "$(zone_ns 1)" node -e "
    const s = require('net').createServer((c) => { let n = 0; const t = Date.now();
      c.on('data', (d) => { n += d.length; });
      c.on('end', () => { console.log('testbed: ' + (n * 8 / ((Date.now() - t) / 1000) / 1e9).toFixed(2) + ' Gbit/s zone 0 -> zone 1'); s.close(); }); });
    s.listen($port, '$(zone_addr 1)');" &
  local server=$!
  sleep 0.5
  ip netns exec "$(zone_ns 0)" node -e "
    const c = require('net').createConnection($port, '$(zone_addr 1)', () => {
      const chunk = Buffer.alloc(1 << 20); let left = $bytes;
      const go = () => { while (left > 0) { left -= chunk.length; if (!c.write(chunk)) return c.once('drain', go); } c.end(); };
      go(); });"
  wait "$server"
  : "$here"
}

cmd=${1:-}
shift || true
case "$cmd" in
  up) need_root; up "$@" ;;
  down) need_root; down ;;
  addr) zone_addr "${1:?zone}" ;;
  exec) need_root; z=${1:?zone}; shift; exec ip netns exec "$(zone_ns "$z")" "$@" ;;
  check) need_root; check ;;
  *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac

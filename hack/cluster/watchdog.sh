#!/usr/bin/env bash
# Reaps a test cluster whose owner died. hack/cluster/launcher.ts starts it with a pipe on stdin that only
# the owner holds; EOF means the owner is gone (exited, crashed or SIGKILLed by the test runner). Then
# every process group recorded in <state>/pids is killed and the state directory removed. After a normal
# dispose there is nothing left to do. Bash, not Node: it lives as long as the cluster, at 3 MB.
#
#   hack/cluster/watchdog.sh <state-dir>
set -u
dir="$1"
cat >/dev/null
# A pid file holds "<pid> <start time>" (field 22 of /proc/<pid>/stat): a reused pid is left alone.
start_time() { [[ -r /proc/$1/stat ]] && sed 's/.*) //' "/proc/$1/stat" | cut -d' ' -f20; }
for round in 1 2 3; do
  for file in "$dir"/pids/*.pid; do
    [[ -f "$file" && "$file" != */watchdog.pid ]] || continue
    read -r pid started <"$file" || continue
    now="$(start_time "$pid")"
    if [[ -n "$now" && ( -z "$started" || "$now" == "$started" ) ]] || { [[ -z "$now" ]] && kill -0 -- "-$pid" 2>/dev/null; }; then
      kill -KILL -- "-$pid" 2>/dev/null
    fi
  done
  sleep 0.5
done
# The real node's containers, mounts, cgroups and network namespace (hack/cluster/real-node.ts).
if [[ -f "$dir/real-node/state.json" ]]; then
  cd "$(dirname "$0")/../.." && node --import tsx hack/cluster/real-node.ts cleanup "$dir"
fi
rm -rf "$dir"

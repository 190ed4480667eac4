#!/usr/bin/env bash
# swarm-rig.sh — a two-node Docker Swarm on one machine, for the swarm runtime's tests and for developers. Run as root.
#
# Usage: scripts/swarm-rig.sh up|down|status|kill-worker [all]|start-worker
#   up            cleans up what a crashed run left (as `down`), then builds the rig and prints its facts
#                 (KEY=value lines, also in /run/dar-swarm/rig.env)
#   down          removes everything the rig made; idempotent, safe after a crash or a half-done `up`
#   status        prints the rig's facts and the swarm's nodes; exits 0 when both nodes are ready, 3 otherwise
#   kill-worker [all]  SIGKILLs the worker's dockerd (and its containerd): the "node goes down" case; its tasks'
#                 processes live on (and answer) until it starts again, unless `all` kills them too
#   start-worker  starts the worker's dockerd again on the same data root: it rejoins as the same node
# Every command but `status` refuses while a test holds the rig (test/helpers/swarm.ts holds /run/dar-swarm.lock).
#
# What `up` builds:
#   - manager: this host's dockerd (/var/run/docker.sock), `swarm init` advertising 10.77.0.1 (the host end of a
#     veth pair) and listening only there;
#   - worker: a second dockerd in the network namespace dar-w1 (10.77.0.2, its own lo), started with `unshare --uts`
#     and its own hostname, `nsenter --net=…` (`ip netns exec` fails on this kind of box), its own data root, exec
#     root, pid file and socket (/run/dar-swarm/w1/docker.sock), `--bridge=none --iptables=false`; joins as a worker;
#   - registry: Debian's docker-registry on 127.0.0.1:$PORT (no auth), reachable as the same 127.0.0.1:$PORT from
#     both nodes through two small node TCP forwarders (scripts/swarm-rig-forward.js): on the host 10.77.0.1:$PORT →
#     127.0.0.1:$PORT, in the namespace 127.0.0.1:$PORT → 10.77.0.1:$PORT. A service's one image string,
#     127.0.0.1:$PORT/name@sha256:…, then works on every node (dockerd pulls from loopback registries over HTTP).
# Traffic stays on loopback and the veth pair. `swarm init` also makes docker_gwbridge (172.x): never send to it.
#
# Environment: DAR_SWARM_REGISTRY_PORT (default 5577); DAR_SWARM_HEARTBEAT (the dispatcher heartbeat, default 1s:
# a killed worker shows Down after ~3 s; ~13 s with Docker's own 5s); DAR_SWARM_SUBNET (default 10.77.0: the veth
# pair is <subnet>.1 and <subnet>.2, /24; the next free 10.77.N when the host's dockerd still holds 10.77.0.1:7946
# from an earlier swarm), for a machine where 10.77.0.0/24 is taken.
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
SCRIPTS=$(dirname "$SELF")
NETNS=dar-w1
VETH_HOST=dar-w1h
VETH_NS=dar-w1n
STATE=/run/dar-swarm
DEFAULT_SUBNET=10.77.0 # the first three octets of the veth pair's /24 (see free_subnet)
DEFAULT_PORT=5577
WORKER_HOSTNAME=dar-w1
use_settings() {
  SUBNET=$1 PORT=$2
  MANAGER_ADDR=$SUBNET.1 WORKER_ADDR=$SUBNET.2
}
# The other commands act on the rig `up` made (its settings are kept); `up` on the environment's or the defaults.
RIG_SUBNET=$DEFAULT_SUBNET RIG_PORT=$DEFAULT_PORT
# shellcheck disable=SC1091
if [ -f "$STATE/settings" ]; then . "$STATE/settings"; fi
use_settings "${DAR_SWARM_SUBNET:-$RIG_SUBNET}" "${DAR_SWARM_REGISTRY_PORT:-$RIG_PORT}"
HEARTBEAT=${DAR_SWARM_HEARTBEAT:-1s}
DATA=/var/lib/dar-swarm
W1=$STATE/w1 # short: containerd's socket lives under the exec root and unix socket paths are limited to 108 bytes
W1_SOCK=$W1/docker.sock
W1_EXEC=$W1/exec
W1_DATA=$DATA/w1
W1_HOST=unix://$W1_SOCK

log() { echo "swarm-rig: $*" >&2; }
die() {
  log "$*"
  exit 1
}
worker() { docker -H "$W1_HOST" "$@"; }

# A pid from a pid file, only while that process still runs `marker` (a pid reused by another process is left alone).
pid_of() {
  local file=$1 marker=$2 pid
  pid=$(cat "$file" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$marker" || return 1
  echo "$pid"
}

# Waits up to $1 tenths of a second for the command to succeed.
wait_for() {
  local tries=$1
  shift
  for ((i = 0; i < tries; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}

# Alive and not a zombie: a daemon from an earlier run is reaped by init, not by us, and that may take a while.
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  [[ ${stat##*) } != Z* ]]
}
netns_empty() { [ -z "$(ip netns pids "$NETNS" 2>/dev/null)" ]; }
veth_gone() { ! ip link show "$VETH_HOST" >/dev/null 2>&1; }
gone() { ! alive "$1"; }

# Starts a daemon in its own session, detached from this script's stdio and lock, its pid in $STATE/<name>.pid.
start_bg() {
  local name=$1
  shift
  setsid "$@" >"$STATE/$name.log" 2>&1 </dev/null 8>&- 9>&- &
  echo $! >"$STATE/$name.pid"
}

# The registry and the forwarders keep nothing worth a graceful stop (the registry's storage goes too).
kill_pidfile() {
  local name=$1 marker=$2 pid
  pid=$(pid_of "$STATE/$name.pid" "$marker") || return 0
  kill -KILL "$pid" 2>/dev/null || true
  wait_for 50 gone "$pid" || log "$name ($pid) outlived SIGKILL for 5 s"
}

# The host dockerd's swarm, when it is the rig's: identified by the address it advertises, never by hostname.
host_swarm_state() { docker info --format '{{.Swarm.LocalNodeState}} {{.Swarm.NodeAddr}}' 2>/dev/null || echo "unreachable -"; }

# --- the worker's dockerd -------------------------------------------------------------------------------------------

# Run through `unshare --uts` by start_worker: its own hostname (else both nodes are called the same), then dockerd
# in the namespace. nsenter and unshare exec in place, so the pid stays dockerd's.
worker_exec() {
  echo "$WORKER_HOSTNAME" >/proc/sys/kernel/hostname # this UTS namespace's only
  exec nsenter --net="/run/netns/$NETNS" -- dockerd --host "$W1_HOST" --data-root "$W1_DATA" --exec-root "$W1_EXEC" \
    --pidfile "$W1/docker.pid" --bridge=none --iptables=false
}

start_worker() {
  mkdir -p "$W1" "$W1_DATA"
  rm -f "$W1/docker.pid" "$W1_SOCK"
  # A killed containerd may still be a zombie (init reaps it, not us): a dockerd that finds its pid file waits for it
  # and gives up ("timeout waiting for containerd to start").
  worker_containerd_pid >/dev/null || rm -f "$W1_EXEC/containerd/containerd.pid"
  start_bg dockerd-w1 unshare --uts -- bash "$SELF" _worker-exec
  if ! wait_for 300 worker version; then
    tail -20 "$STATE/dockerd-w1.log" >&2
    log "the worker's dockerd did not answer on $W1_SOCK in 30 s (log: $STATE/dockerd-w1.log)"
    return 1
  fi
}

worker_containerd_pid() {
  local pid
  pid=$(pid_of "$W1_EXEC/containerd/containerd.pid" containerd) && alive "$pid" && echo "$pid"
}

kill_worker() {
  local pid cpid
  pid=$(pid_of "$W1/docker.pid" "$W1_EXEC") || die "the worker's dockerd is not running"
  cpid=$(worker_containerd_pid) || cpid=
  kill -KILL "$pid"
  wait_for 100 gone "$pid" || die "the worker's dockerd ($pid) outlived SIGKILL for 10 s"
  # Its managed containerd goes too, as when a node's engine dies as a whole: a restarted dockerd cannot reach an
  # orphaned one. The tasks' shims, and so their processes, live on until the worker's dockerd comes back.
  if [ -n "$cpid" ]; then
    kill -KILL "$cpid" 2>/dev/null || true
    wait_for 100 gone "$cpid" || die "the worker's containerd ($cpid) outlived SIGKILL for 10 s"
  fi
  # `all`: the machine dies, tasks too: every process in the namespace but the registry's forwarder.
  if [ "${1:-}" = all ]; then
    local keep
    keep=$(pid_of "$STATE/forward-w1.pid" swarm-rig-forward.js) || keep=
    ip netns pids "$NETNS" | grep -vx -- "${keep:-none}" | xargs -r kill -KILL 2>/dev/null || true
  fi
}

# swarm init makes docker_gwbridge later, or (with its gossip broken) not at all: gone either way counts.
remove_gwbridge() {
  docker network inspect docker_gwbridge >/dev/null 2>&1 || return 0
  docker network rm docker_gwbridge >/dev/null 2>&1
}

# A manager whose leave timed out keeps its gossip listener (port 7946) on the old address until dockerd restarts.
gossip_port_held() { ss -Hltn "src $1:7946" | grep -q .; }

# 10.77.0, or the next 10.77.N whose manager address no such leftover listener holds.
free_subnet() {
  for n in 0 1 2 3 4 5 6 7 8 9; do
    if ! gossip_port_held "10.77.$n.1"; then
      [ "$n" = 0 ] || log "10.77.0.1:7946 is held by the host's dockerd (an earlier swarm's leftover): using 10.77.$n.0/24"
      echo "10.77.$n"
      return
    fi
  done
  echo "$DEFAULT_SUBNET"
}

# --- up / down --------------------------------------------------------------------------------------------------------

write_facts() {
  local manager_id worker_id
  manager_id=$(docker info --format '{{.Swarm.NodeID}}')
  worker_id=$(worker info --format '{{.Swarm.NodeID}}')
  cat >"$STATE/rig.env.tmp" <<EOF
MANAGER_ADDR=$MANAGER_ADDR
WORKER_ADDR=$WORKER_ADDR
WORKER_SOCKET=$W1_SOCK
WORKER_HOST=$W1_HOST
REGISTRY=127.0.0.1:$PORT
MANAGER_ID=$manager_id
WORKER_ID=$worker_id
NETNS=$NETNS
EOF
  mv "$STATE/rig.env.tmp" "$STATE/rig.env"
}

node_ready() { [ "$(docker node inspect --format '{{.Status.State}}' "$1" 2>/dev/null)" = ready ]; }

cmd_up() {
  local state
  do_down
  use_settings "${DAR_SWARM_SUBNET:-$(free_subnet)}" "${DAR_SWARM_REGISTRY_PORT:-$DEFAULT_PORT}"
  if gossip_port_held "$MANAGER_ADDR"; then
    log "warning: the host's dockerd still listens on $MANAGER_ADDR:7946 from an earlier swarm (a leave that timed out):" \
      "the swarm's gossip cannot start there (host-network services still run). Restart dockerd, or pick another DAR_SWARM_SUBNET"
  fi
  state=$(host_swarm_state)
  case $state in
    inactive*) ;;
    unreachable*) die "the host's dockerd does not answer on /var/run/docker.sock (scripts/start-services.sh starts it)" ;;
    *) die "the host's dockerd is already in a swarm the rig did not make ($state): leave it first (docker swarm leave --force)" ;;
  esac
  mkdir -p "$STATE" "$DATA"
  printf 'RIG_SUBNET=%s RIG_PORT=%s\n' "$SUBNET" "$PORT" >"$STATE/settings"
  trap 'status=$?; if [ $status -ne 0 ]; then log "up failed: cleaning up"; do_down || true; fi' EXIT

  # swarm init makes docker_gwbridge unless it exists; `down` removes it only when the rig made it.
  docker network inspect docker_gwbridge >/dev/null 2>&1 || touch "$STATE/made-gwbridge"

  ip netns add "$NETNS"
  ip link add "$VETH_HOST" type veth peer name "$VETH_NS" netns "$NETNS"
  ip addr add "$MANAGER_ADDR/24" dev "$VETH_HOST"
  ip link set "$VETH_HOST" up
  ip -n "$NETNS" addr add "$WORKER_ADDR/24" dev "$VETH_NS"
  ip -n "$NETNS" link set "$VETH_NS" up
  ip -n "$NETNS" link set lo up

  # The registry, and its forwarders: host veth address → registry; namespace loopback → host veth address.
  mkdir -p "$DATA/registry"
  cat >"$STATE/registry.yml" <<EOF
version: 0.1
log: { level: warn }
storage: { filesystem: { rootdirectory: $DATA/registry }, delete: { enabled: true } }
http: { addr: "127.0.0.1:$PORT" }
EOF
  start_bg registry /usr/bin/docker-registry serve "$STATE/registry.yml"
  start_bg forward-host node "$SCRIPTS/swarm-rig-forward.js" "$MANAGER_ADDR:$PORT" "127.0.0.1:$PORT"
  start_bg forward-w1 nsenter --net="/run/netns/$NETNS" -- node "$SCRIPTS/swarm-rig-forward.js" "127.0.0.1:$PORT" "$MANAGER_ADDR:$PORT"

  docker swarm init --advertise-addr "$MANAGER_ADDR" --listen-addr "$MANAGER_ADDR:2377" --dispatcher-heartbeat "$HEARTBEAT" >/dev/null
  start_worker || exit 1
  worker swarm join --token "$(docker swarm join-token -q worker)" --advertise-addr "$WORKER_ADDR" \
    --listen-addr "$WORKER_ADDR:2377" "$MANAGER_ADDR:2377" >/dev/null

  # Both nodes ready, and the registry answering from both (the namespace's view through its forwarder).
  wait_for 200 curl -fsS "http://127.0.0.1:$PORT/v2/" || die "the registry did not answer on 127.0.0.1:$PORT (log: $STATE/registry.log)"
  wait_for 200 nsenter --net="/run/netns/$NETNS" -- curl -fsS "http://127.0.0.1:$PORT/v2/" ||
    die "the registry did not answer inside $NETNS on 127.0.0.1:$PORT (log: $STATE/forward-w1.log)"
  write_facts
  # shellcheck disable=SC1091
  . "$STATE/rig.env"
  wait_for 300 node_ready "$MANAGER_ID" || die "the manager node $MANAGER_ID is not ready after 30 s"
  wait_for 300 node_ready "$WORKER_ID" || die "the worker node $WORKER_ID is not ready after 30 s"
  trap - EXIT
  cat "$STATE/rig.env"
}

# Unmounts every mount under a path, deepest first (a stopped dockerd leaves an nsfs mount at <exec-root>/netns/default).
umount_under() {
  local root=$1
  findmnt -rn -o TARGET | awk -v root="$root" 'index($0, root "/") == 1 || $0 == root' | sort -r |
    while read -r target; do umount --lazy "$target" 2>/dev/null || true; done
}

do_down() {
  local state pid
  state=$(host_swarm_state)
  if [[ $state != inactive* && $state != unreachable* ]]; then
    if [[ $state == *" $MANAGER_ADDR" ]]; then
      # Services first: their tasks stop on both nodes while both engines still run.
      if [[ $state == active* ]] && docker node ls >/dev/null 2>&1; then
        docker service ls -q | xargs -r docker service rm >/dev/null 2>&1 || true
      fi
    else
      log "the host's dockerd is in a swarm the rig did not make ($state): left as it is"
    fi
  fi

  # Order matters: the worker leaves first, then the manager, alone. A manager that leaves while the worker's engine
  # is dying (or was killed moments ago) times out on its gossip leave broadcast ("Could not close DB") and keeps
  # listening on $MANAGER_ADDR:7946 until dockerd restarts, which breaks every later swarm's gossip on that address.
  if [ -d "$W1_DATA/swarm" ] && ! pid_of "$W1/docker.pid" "$W1_EXEC" >/dev/null && [ -e "/run/netns/$NETNS" ]; then
    start_worker 2>/dev/null || log "could not start the killed worker to let it leave"
  fi
  if pid_of "$W1/docker.pid" "$W1_EXEC" >/dev/null; then
    timeout 30 docker -H "$W1_HOST" swarm leave --force >/dev/null 2>&1 || log "the worker's swarm leave failed"
  fi
  if [[ $state == *" $MANAGER_ADDR" ]]; then
    docker swarm leave --force >/dev/null 2>&1 || log "docker swarm leave --force failed: $(host_swarm_state)"
  fi
  # The worker's engine: a graceful stop (stops its containers, unmounts its layers), then anything left in its namespace.
  if pid=$(pid_of "$W1/docker.pid" "$W1_EXEC"); then
    kill -TERM "$pid" 2>/dev/null || true
    # A slow graceful stop (a loaded box) is killed, and down returns only once it is gone.
    if ! wait_for 100 gone "$pid"; then
      kill -KILL "$pid" 2>/dev/null || true
      wait_for 50 gone "$pid" || true
    fi
  fi
  if [ -e "/run/netns/$NETNS" ]; then
    ip netns pids "$NETNS" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
    wait_for 50 netns_empty || true
  fi
  if pid=$(worker_containerd_pid); then kill -KILL "$pid" 2>/dev/null || true; fi

  if [ -e "$STATE/made-gwbridge" ] && [[ $(host_swarm_state) == inactive* ]]; then
    if wait_for 50 remove_gwbridge; then
      rm -f "$STATE/made-gwbridge"
    else
      log "could not remove docker_gwbridge (it is still in use)"
    fi
  fi
  # Images the manager pulled from the rig's registry (by tag or by digest); no other image is touched.
  docker images --digests --format '{{.Repository}} {{.Tag}} {{.Digest}}' 2>/dev/null |
    awk -v repo="127.0.0.1:$PORT/" 'index($1, repo) == 1 { if ($2 != "<none>") print $1 ":" $2; if ($3 != "<none>") print $1 "@" $3 }' |
    xargs -r docker rmi >/dev/null 2>&1 || true

  kill_pidfile forward-w1 swarm-rig-forward.js
  kill_pidfile forward-host swarm-rig-forward.js
  kill_pidfile registry "$STATE/registry.yml"

  umount_under "$W1"
  umount_under "$W1_DATA"
  if [ -e "/run/netns/$NETNS" ]; then ip netns delete "$NETNS" 2>/dev/null || log "ip netns delete $NETNS failed"; fi
  # The veth goes with the namespace, about a second later.
  wait_for 50 veth_gone || ip link delete "$VETH_HOST" 2>/dev/null || true
  rm -rf "$DATA" "$W1"
  if [ -e "$STATE/made-gwbridge" ]; then
    # Kept until docker_gwbridge goes, so a later `down` still knows the rig made it.
    find "$STATE" -mindepth 1 ! -name made-gwbridge -delete
  else
    rm -rf "$STATE"
  fi
}

cmd_status() {
  local state
  state=$(host_swarm_state)
  echo "host dockerd swarm: $state"
  if [ ! -f "$STATE/rig.env" ]; then
    echo "rig: down"
    exit 3
  fi
  cat "$STATE/rig.env"
  # shellcheck disable=SC1091
  . "$STATE/rig.env"
  docker node ls --format '{{.ID}} {{.Hostname}} {{.Status}} {{.ManagerStatus}}' 2>/dev/null || true
  echo "registry: $(pid_of "$STATE/registry.pid" "$STATE/registry.yml" || echo stopped)," \
    "forwarders: $(pid_of "$STATE/forward-host.pid" swarm-rig-forward.js || echo stopped)" \
    "$(pid_of "$STATE/forward-w1.pid" swarm-rig-forward.js || echo stopped)," \
    "worker dockerd: $(pid_of "$W1/docker.pid" "$W1_EXEC" || echo stopped)"
  node_ready "$MANAGER_ID" && node_ready "$WORKER_ID" || exit 3
}

[ "$(id -u)" -eq 0 ] || die "run as root (it makes a network namespace and a second dockerd)"
cmd=${1:-}
if [ "$cmd" = _worker-exec ]; then worker_exec; fi

# One command at a time (a test's `down` and a developer's `up` must not interleave); daemons close these fds.
mkdir -p "$(dirname "$STATE")"
exec 9>/run/dar-swarm.ops.lock
flock --wait 120 9 || die "another swarm-rig.sh command held /run/dar-swarm.ops.lock for 120 s"
# A test holds the rig's lock while it uses the rig (test/helpers/swarm.ts, which says so in the environment): a
# command from anywhere else must not pull the rig from under it.
if [ "$cmd" != status ] && [ "${DAR_SWARM_LOCK_HELD:-}" != 1 ]; then
  exec 8>/run/dar-swarm.lock
  flock --nonblock 8 || die "a test is using the swarm rig ($(cat /run/dar-swarm.holder 2>/dev/null || echo 'see /run/dar-swarm.lock')): wait for it to finish"
fi

case $cmd in
  up) cmd_up ;;
  down) do_down ;;
  status) cmd_status ;;
  kill-worker) kill_worker "${2:-}" ;;
  start-worker) start_worker || exit 1 ;;
  *) die "usage: $0 up|down|status|kill-worker [all]|start-worker (got '${cmd}')" ;;
esac

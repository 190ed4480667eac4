#!/usr/bin/env bash
# A first deploy, end to end, on this machine: the hello app (examples/hello/app) in a git repo with three tags,
# a private nginx in front of it, and the agent on a config of its own. Shows the states, the live release, a
# bad release rolled back by the agent and a manual rollback. Needs a running Docker engine, nginx, git, curl and
# Debian's busybox-static (for the app's base image); `bash scripts/start-services.sh` (as root) starts Docker.
#
#   bash examples/hello/demo.sh            # everything in a temp dir, removed at the end
#   bash examples/hello/demo.sh --keep     # leave the agent, nginx and the app running; prints how to stop them
#
# Ports (all on 127.0.0.1) can be chosen: DEMO_NGINX_PORT (8080), DEMO_AGENT_PORT (8788), DEMO_PORTS ("18101 18102").
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
keep=0
[ "${1:-}" = "--keep" ] && keep=1

nginx_port=${DEMO_NGINX_PORT:-8080}
agent_port=${DEMO_AGENT_PORT:-8788}
read -r blue green <<<"${DEMO_PORTS:-18101 18102}"
base_image=deploy-agent-hello-base:1
work=${DEMO_DIR:-$(mktemp -d -t deploy-agent-hello.XXXXXX)}
mkdir -p "$work"
work=$(cd "$work" && pwd)

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
fail() { echo "demo: $*" >&2; exit 1; }
agent() { node "$root/bin/deploy-agent.js" "$@"; }
yaml_list() { local out="" arg; for arg; do out+="${out:+, }\"$arg\""; done; echo "[$out]"; }
page() { curl -fsS --max-time 5 "http://127.0.0.1:$nginx_port/${1:-}"; }

for tool in docker nginx git curl node; do
  command -v "$tool" >/dev/null || fail "$tool is not installed"
done
docker info >/dev/null 2>&1 || fail "the Docker engine is not running (as root: bash scripts/start-services.sh)"

step "base image $base_image (busybox, made here: no registry needed)"
if ! docker image inspect "$base_image" >/dev/null 2>&1; then
  [ -x /bin/busybox ] || fail "/bin/busybox is missing (apt-get install busybox-static)"
  rootfs="$work/rootfs"
  mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp"
  chmod 1777 "$rootfs/tmp"
  cp /bin/busybox "$rootfs/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -s busybox "$rootfs/bin/$applet"
  done
  echo 'root:x:0:0:root:/:/bin/sh' >"$rootfs/etc/passwd"
  echo 'root:x:0:' >"$rootfs/etc/group"
  tar -C "$rootfs" --numeric-owner --owner=0 --group=0 -c . |
    docker import --change 'ENV PATH=/bin' --change 'CMD ["sh"]' - "$base_image" >/dev/null
  rm -rf "$rootfs"
fi
echo "ok"

step "the app's repository: v1.0.0, v1.1.0, and v1.2.0 which breaks 3 s after it starts"
repo="$work/hello.git"
git init -q -b main "$repo"
cp -R "$here/app/." "$repo/"
commit_tag() {
  git -C "$repo" add -A
  git -C "$repo" -c user.name=demo -c user.email=demo@localhost commit -q -m "$1"
  git -C "$repo" tag "$1"
}
commit_tag v1.0.0
sed -i 's|<h1>.*</h1>|<h1>Hello again from deploy-agent</h1>|' "$repo/www/index.html"
commit_tag v1.1.0
echo 3 >"$repo/break-after-seconds"
sed -i 's|^COPY serve.sh migrate.sh /app/|COPY serve.sh migrate.sh break-after-seconds /app/|' "$repo/Dockerfile"
commit_tag v1.2.0
git -C "$repo" tag --list

step "nginx on 127.0.0.1:$nginx_port, in front of upstream hello_demo"
mkdir -p "$work/nginx/temp"
upstream="$work/nginx/hello-demo.conf"
# The agent writes this file at each switch; until the first deploy it points at the idle blue port.
echo "upstream hello_demo { server 127.0.0.1:$blue; }" >"$upstream"
cat >"$work/nginx/nginx.conf" <<EOF
$( [ "$(id -u)" = 0 ] && echo 'user root root;' )
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 256; }
http {
  access_log $work/nginx/access.log;
  # The JSON log the agent reads to roll a release back on its real error rate (proxy.accessLog below).
  log_format deploy_agent escape=json '{"msec":\$msec,"status":\$status,"upstream_addr":"\$upstream_addr","upstream_status":"\$upstream_status","request_time":\$request_time}';
  access_log $work/nginx/hello-demo.json deploy_agent;
  client_body_temp_path $work/nginx/temp/body;
  proxy_temp_path $work/nginx/temp/proxy;
  fastcgi_temp_path $work/nginx/temp/fastcgi;
  uwsgi_temp_path $work/nginx/temp/uwsgi;
  scgi_temp_path $work/nginx/temp/scgi;
  include $upstream;
  server {
    listen 127.0.0.1:$nginx_port;
    # A 5xx or no answer from a release being observed is answered again by the warm standby (never a POST).
    location / { proxy_pass http://hello_demo; proxy_connect_timeout 2s; proxy_next_upstream error timeout http_500 http_502 http_503 http_504; }
  }
}
EOF
nginx_cmd=(nginx -p "$work/nginx" -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf")
"${nginx_cmd[@]}"

step "the agent on 127.0.0.1:$agent_port (state in $work/state)"
agent keygen --name demo --out-dir "$work/keys" --status-token >/dev/null
cat >"$work/agent.yaml" <<EOF
listen: { host: 127.0.0.1, port: $agent_port }
stateDir: ./state
audience: 127.0.0.1
keys:
  - { id: demo, alg: ed25519, publicKeyFile: ./keys/demo.pub }
statusToken: { file: ./keys/status.token }
apps:
  hello:
    repo: ./hello.git
    migrate: { command: [sh, /app/migrate.sh] }
    health: { path: /healthz, intervalMs: 200, healthyAfter: 2, deadlineSec: 20 }
    smoke: [{ path: /, expectStatus: 200 }]
    observe: { seconds: 8, intervalMs: 500, maxFailures: 2 }
    envs:
      demo:
        ref: "tag:v*"
        ports: [$blue, $green]
        proxy:
          upstreamFile: ./nginx/hello-demo.conf
          upstreamName: hello_demo
          test: $(yaml_list "${nginx_cmd[@]}" -t)
          reload: $(yaml_list "${nginx_cmd[@]}" -s reload)
          pidFile: ./nginx/nginx.pid
          drainMs: 500
          accessLog: $work/nginx/hello-demo.json
EOF
agent check-config --config "$work/agent.yaml"
node "$root/bin/deploy-agent.js" serve --config "$work/agent.yaml" >"$work/agent.log" 2>&1 &
agent_pid=$!

cleanup() {
  if [ "$keep" = 1 ]; then
    echo
    echo "left running: agent pid $agent_pid (log $work/agent.log), nginx on :$nginx_port. Stop them with:"
    echo "  kill $agent_pid; ${nginx_cmd[*]} -s quit; docker rm -f \$(docker ps -aq --filter label=deploy-agent.app=hello); rm -rf $work"
    return
  fi
  kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null || true
  "${nginx_cmd[@]}" -s quit 2>/dev/null || true
  ids=$(docker ps -aq --filter label=deploy-agent.app=hello --filter "label=deploy-agent.port=$blue"; docker ps -aq --filter label=deploy-agent.app=hello --filter "label=deploy-agent.port=$green")
  [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
  [ -n "${DEMO_DIR:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$agent_port/healthz" >/dev/null 2>&1 && break
  kill -0 "$agent_pid" 2>/dev/null || { cat "$work/agent.log" >&2; fail "the agent did not start"; }
  sleep 0.1
done

export DEPLOY_AGENT_URL="http://127.0.0.1:$agent_port" DEPLOY_AGENT_KEY_ID=demo \
  DEPLOY_AGENT_KEY_FILE="$work/keys/demo.key" DEPLOY_AGENT_STATUS_TOKEN_FILE="$work/keys/status.token"

step "deploy v1.0.0: fetch the tag, build, migrate, start beside nothing, check, switch nginx, observe"
agent deploy hello demo v1.0.0 --reason "first deploy" --follow
echo "nginx serves version $(page version)"

step "deploy v1.1.0: started on the other port while v1.0.0 keeps serving"
agent deploy hello demo v1.1.0 --follow
echo "nginx serves version $(page version): $(page | grep -o '<h1>.*</h1>')"

step "deploy v1.2.0: healthy at first, breaks 3 s after the switch; the agent rolls back by itself"
if agent deploy hello demo v1.2.0 --follow; then fail "v1.2.0 should have been rolled back"; fi
echo "nginx serves version $(page version)"

step "manual rollback to v1.0.0: its stopped container starts again, no rebuild"
agent rollback hello demo --to v1.0.0 --follow
echo "nginx serves version $(page version)"

step "what the operator sees"
agent releases hello demo
agent deploys --limit 5
agent status

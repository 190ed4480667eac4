#!/usr/bin/env bash
# The hand-written blue-green deploy the agent is measured against (bench/deploy.ts runs it): the same steps with the
# docker CLI, curl and nginx, nothing else — no journal, no reload confirmation, no rollback.
#   git archive <tag> | docker build -  →  docker run on the idle port (host network)  →  /healthz twice in a row
#   →  rewrite the upstream file  →  nginx -t  →  nginx -s reload  →  wait DRAIN  →  docker stop the old container
# Prints "mark <step> <epoch ms>" after each step, for the phase breakdown.
set -euo pipefail
: "${REPO:?}" "${TAG:?}" "${IMAGE:?}" "${NAME:?}" "${PORT:?}" "${LABEL:?}" "${UPSTREAM_FILE:?}" "${UPSTREAM_NAME:?}" "${NGINX_DIR:?}"
OLD=${OLD:-}                          # the live container's name; empty on the first deploy
HEALTH_INTERVAL=${HEALTH_INTERVAL:-0.1}
HEALTH_DEADLINE=${HEALTH_DEADLINE:-10}
DRAIN=${DRAIN:-0.5}
export DOCKER_BUILDKIT=0              # the classic builder, as the agent's build through the Engine API

mark() { local us=${EPOCHREALTIME/./}; echo "mark $1 ${us:0:-3}"; }
nginx_() { nginx -p "$NGINX_DIR" -e "$NGINX_DIR/error.log" -c "$NGINX_DIR/nginx.conf" "$@"; }

mark start
git -C "$REPO" archive "$TAG" |
  docker build --quiet --tag "$IMAGE" --build-arg VERSION="$TAG" --label "$LABEL" - >/dev/null
mark built

docker rm --force "$NAME" >/dev/null 2>&1 || true   # whatever release last used the idle port
docker run --detach --name "$NAME" --label "$LABEL" --network host --init --restart unless-stopped \
  --env PORT="$PORT" "$IMAGE" >/dev/null
mark started

ok=0
deadline=$((SECONDS + HEALTH_DEADLINE))
while :; do
  if curl --silent --fail --output /dev/null --max-time 1 "http://127.0.0.1:$PORT/healthz"; then ok=$((ok + 1)); else ok=0; fi
  [ "$ok" -ge 2 ] && break
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "candidate on port $PORT not healthy within ${HEALTH_DEADLINE} s" >&2
    docker rm --force "$NAME" >/dev/null
    exit 1
  fi
  sleep "$HEALTH_INTERVAL"
done
mark healthy

printf 'upstream %s { server 127.0.0.1:%s; }\n' "$UPSTREAM_NAME" "$PORT" >"$UPSTREAM_FILE.tmp"
mv "$UPSTREAM_FILE.tmp" "$UPSTREAM_FILE"
nginx_ -t -q
nginx_ -s reload
mark switched

sleep "$DRAIN"
[ -z "$OLD" ] || docker stop "$OLD" >/dev/null
mark done

#!/bin/sh
# The agent gives each release its own PORT on 127.0.0.1 (host networking).
# A release that ships /app/break-after-seconds stops answering /healthz that long after it starts:
# the demo's "bad release", which the agent catches while observing it and rolls back.
trap 'exit 0' TERM
httpd -p "127.0.0.1:$PORT" -h /www
if [ -f /app/break-after-seconds ]; then
  sleep "$(cat /app/break-after-seconds)"
  rm -f /www/healthz
fi
while :; do sleep 1; done

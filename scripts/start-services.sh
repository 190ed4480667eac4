#!/usr/bin/env bash
# Starts the engines the integration tests use on a Debian box: dockerd (no bridge, host networking only),
# PostgreSQL 15 and nothing else (tests start their own nginx instances). Idempotent; run as root.
set -euo pipefail

start_dockerd() {
  if docker info >/dev/null 2>&1; then return; fi
  # A killed dockerd leaves its pid file behind and a new one refuses to start.
  if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    rm -f /var/run/docker.pid
  fi
  nohup dockerd --host unix:///var/run/docker.sock --bridge=none --iptables=false >/var/log/dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return
    sleep 0.5
  done
  echo "dockerd did not come up; see /var/log/dockerd.log" >&2
  tail -20 /var/log/dockerd.log >&2
  exit 1
}

start_postgres() {
  local version
  version=$(ls /etc/postgresql | sort -n | tail -1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
  for _ in $(seq 1 60); do
    pg_isready -q -h 127.0.0.1 && return
    sleep 0.5
  done
  echo "PostgreSQL $version did not come up" >&2
  exit 1
}

start_dockerd
start_postgres
# The tests connect as a superuser over TCP with a password.
su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\""
echo "services up: docker $(docker version --format '{{.Server.Version}}'), $(psql --version)"

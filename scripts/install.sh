#!/usr/bin/env bash
# Installs deploy-agent from this checkout on a Debian server, as root. Idempotent: a second run changes nothing,
# and an existing config or key is never overwritten. Steps: the system user `deploy-agent` (in group docker), its
# directories, the app in /opt/deploy-agent (compiled: `dist/` built from this checkout, `npm ci --omit=dev`; never
# the TypeScript sources), a CI key pair and status token (`deploy-agent keygen`), a starter config, the systemd
# units (the agent, and the root-owned nginx reload helper), then one start (`systemctl enable --now`) on a fresh
# install or one restart of a running agent that was upgraded, when systemd runs this machine — else it prints
# what to run. Building needs this checkout's development dependencies (`npm ci` here first).
#
# Environment (all optional):
#   DEPLOY_AGENT_ROOT         install under this directory instead of / (files refer to the final paths, as with
#                             DESTDIR; systemctl is never run then). Needs ROOT/etc/passwd and group for useradd.
#   DEPLOY_AGENT_APP_DIR      /opt/deploy-agent           DEPLOY_AGENT_ETC_DIR     /etc/deploy-agent
#   DEPLOY_AGENT_LIB_DIR      /var/lib/deploy-agent       DEPLOY_AGENT_BACKUP_DIR  /var/backups/deploy-agent
#   DEPLOY_AGENT_NGINX_DIR    /etc/nginx/deploy-agent     DEPLOY_AGENT_UNIT_DIR    /etc/systemd/system
#   DEPLOY_AGENT_BIN_DIR      /usr/local/bin              DEPLOY_AGENT_DOC_DIR     /usr/share/doc/deploy-agent
#   DEPLOY_AGENT_AUDIENCE     the host name CI signs into requests (default: `hostname -f`), starter config only
#   DEPLOY_AGENT_PORT         the port the agent listens on, on 127.0.0.1 (default 8787), starter config only
#   DEPLOY_AGENT_KEY_NAME     the CI key's id and file stem (default ci-main)
#   DEPLOY_AGENT_SKIP_NPM=1   do not run `npm ci` (node_modules must already be in the app dir)
#   DEPLOY_AGENT_DIST         install this build of this checkout (a dist/ from `npm run build`) instead of building
#   DEPLOY_AGENT_SYSTEMCTL    the systemctl to run, even with DEPLOY_AGENT_ROOT (the tests use a stand-in)
set -euo pipefail

me=install.sh
die() {
  echo "$me: $*" >&2
  exit 1
}

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
root=${DEPLOY_AGENT_ROOT:-}
root=${root%/}
app_dir=${DEPLOY_AGENT_APP_DIR:-/opt/deploy-agent}
etc_dir=${DEPLOY_AGENT_ETC_DIR:-/etc/deploy-agent}
lib_dir=${DEPLOY_AGENT_LIB_DIR:-/var/lib/deploy-agent}
backup_dir=${DEPLOY_AGENT_BACKUP_DIR:-/var/backups/deploy-agent}
nginx_dir=${DEPLOY_AGENT_NGINX_DIR:-/etc/nginx/deploy-agent}
unit_dir=${DEPLOY_AGENT_UNIT_DIR:-/etc/systemd/system}
bin_dir=${DEPLOY_AGENT_BIN_DIR:-/usr/local/bin}
doc_dir=${DEPLOY_AGENT_DOC_DIR:-/usr/share/doc/deploy-agent}
port=${DEPLOY_AGENT_PORT-8787}
key_name=${DEPLOY_AGENT_KEY_NAME:-ci-main}
user=deploy-agent

for path in "$app_dir" "$etc_dir" "$lib_dir" "$backup_dir" "$nginx_dir" "$unit_dir" "$bin_dir" "$doc_dir"; do
  case $path in
    /*) ;;
    *) die "paths must be absolute, not \"$path\"" ;;
  esac
  case $path in *[[:space:]]* | *..*) die "paths must not contain spaces or '..': \"$path\"" ;; esac
done
[[ $key_name =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$ ]] || die "DEPLOY_AGENT_KEY_NAME must be a key id (letters, digits, . _ -), not \"$key_name\""
[[ $port =~ ^[1-9][0-9]{0,4}$ ]] && [ "$port" -le 65535 ] || die "DEPLOY_AGENT_PORT must be a port number (1-65535), not \"$port\""
[ "$(id -u)" -eq 0 ] || die "run as root (it creates a system user and installs systemd units)"
if [ -n "$root" ]; then
  [ -f "$root/etc/passwd" ] && [ -f "$root/etc/group" ] || die "DEPLOY_AGENT_ROOT=$root has no etc/passwd and etc/group"
fi
command -v node >/dev/null 2>&1 || die "Node.js >= 20.19 is required (apt-get install nodejs, or NodeSource's packages)"
[ "$(node -p 'process.versions.node.split(".")[0]')" -ge 20 ] || die "Node.js >= 20.19 is required (found $(node --version))"
tsc=$src/node_modules/typescript/bin/tsc
prebuilt=${DEPLOY_AGENT_DIST:-}
[ -z "$prebuilt" ] || [ -f "$prebuilt/cli/main.js" ] || die "DEPLOY_AGENT_DIST=$prebuilt is not a build of the agent (no cli/main.js)"
# Run from the installed copy itself, there is nothing to build or copy.
[ "$src" = "$root$app_dir" ] || [ -n "$prebuilt" ] || [ -f "$tsc" ] || die "building the agent needs this checkout's development dependencies: run \`npm ci\` in $src first"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
changes=0
note() {
  echo "  $*"
  changes=$((changes + 1))
}

# --- user and group ----------------------------------------------------------------------------------------------
root_args=()
[ -z "$root" ] || root_args=(--root "$root")
in_file() { awk -F: -v name="$1" '$1 == name { found = 1 } END { exit !found }' "$root/etc/$2"; }
field_of() { awk -F: -v name="$1" -v n="$3" '$1 == name { print $n }' "$root/etc/$2"; }

echo "$me: user"
if ! in_file docker group; then
  # docker.io's own postinst keeps an existing docker group.
  groupadd "${root_args[@]}" --system docker
  note "created group docker"
fi
if ! in_file "$user" passwd; then
  useradd "${root_args[@]}" --system --user-group --groups docker --home-dir "$lib_dir" --shell /usr/sbin/nologin \
    --comment "deploy-agent" "$user"
  note "created system user $user (group docker)"
elif ! awk -F: -v u="$user" '$1 == "docker" { n = split($4, m, ","); for (i = 1; i <= n; i++) if (m[i] == u) found = 1 } END { exit !found }' "$root/etc/group"; then
  usermod "${root_args[@]}" --append --groups docker "$user"
  note "added $user to group docker"
fi
uid=$(field_of "$user" passwd 3)
gid=$(field_of "$user" passwd 4) # its primary group, whatever its name
[ -n "$uid" ] && [ -n "$gid" ] || die "cannot find user $user in $root/etc/passwd after creating it"

# --- directories --------------------------------------------------------------------------------------------------
# make_dir PATH MODE OWNER GROUP: creates it or corrects its mode and owner (numeric: the user may live only in ROOT).
make_dir() {
  local path=$root$1
  if [ ! -d "$path" ]; then
    install -d -m "$2" -o "$3" -g "$4" "$path"
    note "created $1"
  elif [ "$(stat -c '%a %u %g' "$path")" != "${2#0} $3 $4" ]; then
    chmod "$2" "$path" && chown "$3:$4" "$path"
    note "fixed mode/owner of $1"
  fi
}

echo "$me: directories"
make_dir "$etc_dir" 0750 0 "$gid"
make_dir "$etc_dir/keys" 0750 0 "$gid"
make_dir "$lib_dir" 0750 "$uid" "$gid"
make_dir "$backup_dir" 0750 "$uid" "$gid"
make_dir "$nginx_dir" 0755 "$uid" "$gid"
make_dir "$app_dir" 0755 0 0
# Shared system directories are only created when missing, never re-moded.
for dir in "$bin_dir" "$unit_dir" "$doc_dir"; do
  if [ ! -d "$root$dir" ]; then
    install -d -m 0755 "$root$dir"
    note "created $dir"
  fi
done

# --- the app ------------------------------------------------------------------------------------------------------
# put_file SRC DEST MODE: copies only when content or mode differ (keeps mtimes of unchanged files); root-owned.
put_file() {
  if cmp -s "$1" "$2" && [ "$(stat -c %a "$2")" = "${3#0}" ]; then return 1; fi
  install -D -m "$3" -o 0 -g 0 "$1" "$2"
}


# install_tree FROM ITEM: ITEM (a file or directory of FROM) into the app dir, and removes the files it no longer has.
install_tree() {
  local from=$1 item=$2 rel mode
  if [ -d "$from/$item" ]; then
    while IFS= read -r -d '' rel; do
      mode=0644
      [ ! -x "$from/$item/$rel" ] || mode=0755
      if put_file "$from/$item/$rel" "$root$app_dir/$item/$rel" "$mode"; then app_files=$((app_files + 1)); fi
    done < <(cd "$from/$item" && find . -type f -print0)
    # Files an older version had and this one does not.
    if [ -d "$root$app_dir/$item" ]; then
      while IFS= read -r -d '' rel; do
        if [ ! -e "$from/$item/$rel" ]; then
          rm -f "$root$app_dir/$item/$rel"
          note "removed $app_dir/$item/${rel#./}"
        fi
      done < <(cd "$root$app_dir/$item" && find . -type f -print0)
    fi
  elif [ -f "$from/$item" ]; then
    if put_file "$from/$item" "$root$app_dir/$item" 0644; then
      app_files=$((app_files + 1))
      [ "$item" != package-lock.json ] || lock_changed=1
    fi
  fi
}

app_items=(bin config systemd scripts package.json package-lock.json)
lock_changed=0
app_files=0
echo "$me: app in $app_dir"
if [ "$src" != "$root$app_dir" ]; then
  # Production runs compiled JavaScript only, never through a TypeScript loader (tsx caches compiled code in a
  # shared temp dir without checking its owner). A fresh build in the scratch dir: nothing stale from an old one.
  if [ -n "$prebuilt" ]; then
    ln -s "$(cd "$prebuilt" && pwd)" "$scratch/dist"
  else
    echo "$me: build"
    node "$tsc" -p "$src/tsconfig.build.json" --outDir "$scratch/dist" || die "the build (tsc -p tsconfig.build.json) failed"
  fi
  for item in "${app_items[@]}"; do install_tree "$src" "$item"; done
  install_tree "$scratch" dist
  # An older install ran the sources through tsx; with them gone the bin can only run dist/.
  for old in agent tsconfig.json README.md; do
    if [ -e "$root$app_dir/$old" ]; then
      rm -rf -- "$root$app_dir/$old"
      note "removed $app_dir/$old"
    fi
  done
  if put_file "$src/README.md" "$root$doc_dir/README.md" 0644; then app_files=$((app_files + 1)); fi
  for page in "$src"/docs/*.md; do
    if put_file "$page" "$root$doc_dir/docs/${page##*/}" 0644; then app_files=$((app_files + 1)); fi
  done
  [ "$app_files" = 0 ] || note "installed $app_files new or changed files from $src"
fi
if [ "${DEPLOY_AGENT_SKIP_NPM:-}" = 1 ]; then
  [ -d "$root$app_dir/node_modules" ] || die "DEPLOY_AGENT_SKIP_NPM=1 but $root$app_dir/node_modules does not exist"
elif [ "$lock_changed" = 1 ] || [ ! -d "$root$app_dir/node_modules" ]; then
  npm ci --omit=dev --no-audit --no-fund --prefix "$root$app_dir"
  note "ran npm ci --omit=dev in $app_dir"
fi
cli=("$(command -v node)" "$root$app_dir/bin/deploy-agent.js")
link=$root$bin_dir/deploy-agent
if [ "$(readlink "$link" 2>/dev/null || true)" != "$app_dir/bin/deploy-agent.js" ]; then
  ln -sfn "$app_dir/bin/deploy-agent.js" "$link"
  note "linked $bin_dir/deploy-agent"
fi

# --- keys and config ----------------------------------------------------------------------------------------------
keys=$root$etc_dir/keys
echo "$me: keys and config in $etc_dir"
# A new pair only when neither half exists: the operator is told to delete the private half once CI has it, and
# a new private key beside the old public key would be a pair that does not match.
need_pair=0
[ -e "$keys/$key_name.key" ] || [ -e "$keys/$key_name.pub" ] || need_pair=1
if [ "$need_pair" = 1 ] || [ ! -e "$keys/status.token" ]; then
  "${cli[@]}" keygen --alg ed25519 --name "$key_name" --out-dir "$scratch/keys" --status-token >/dev/null
  files=(status.token)
  [ "$need_pair" = 0 ] || files+=("$key_name.key" "$key_name.pub")
  for file in "${files[@]}"; do
    if [ ! -e "$keys/$file" ]; then
      mv "$scratch/keys/$file" "$keys/$file"
      note "generated $etc_dir/keys/$file"
    fi
  done
fi
# ensure_mode PATH MODE GROUP: the CI key stays root's; the agent's group reads the token and public keys.
ensure_mode() {
  [ -e "$1" ] || return 0
  if [ "$(stat -c '%a %u %g' "$1")" != "${2#0} 0 $3" ]; then
    chmod "$2" "$1" && chown "0:$3" "$1"
    note "set mode $2 on ${1#"$root"}"
  fi
}
ensure_mode "$keys/$key_name.key" 0600 0
ensure_mode "$keys/$key_name.pub" 0644 "$gid"
ensure_mode "$keys/status.token" 0640 "$gid"

config=$root$etc_dir/agent.yaml
if [ ! -e "$config" ]; then
  audience=${DEPLOY_AGENT_AUDIENCE:-$(hostname -f 2>/dev/null || hostname)}
  [[ $audience =~ ^[A-Za-z0-9][A-Za-z0-9.:-]{0,252}$ ]] || die "DEPLOY_AGENT_AUDIENCE must be a host name, not \"$audience\""
  (umask 027 && cat >"$config" <<EOF
# deploy-agent on $audience — a starter written by scripts/install.sh; it is never overwritten.
# Every key is explained in $app_dir/config/agent.example.yaml: copy an app from there into \`apps\`.
# Check: deploy-agent check-config --config $etc_dir/agent.yaml; then: systemctl restart deploy-agent
# (SIGHUP, \`systemctl reload deploy-agent\`, re-reads only the keys and the status token).
listen: { host: 127.0.0.1, port: $port }   # put nginx with TLS in front, or set listen.tls
stateDir: $lib_dir
audience: $audience                        # CI signs this host name into every request
keys:
  - id: $key_name
    alg: ed25519
    publicKeyFile: keys/$key_name.pub      # relative to this file; CI holds keys/$key_name.key
    allow: { envs: [staging, production] }
statusToken: { file: keys/status.token }
backups: { dir: $backup_dir }
apps: {}
# Each env behind nginx reloads it through the root-owned deploy-agent-nginx-reload.path unit (the agent may not
# signal nginx itself); the agent confirms the reload through nginx's pid file:
#   proxy:
#     upstreamFile: $nginx_dir/<app>-<env>.conf
#     test: ["true"]                                   # the helper runs nginx -t (as root) before reloading
#     reload: ["touch", "$nginx_dir/.reload"]
#     pidFile: /run/nginx.pid
EOF
  )
  chown "0:$gid" "$config"
  note "wrote $etc_dir/agent.yaml (starter; audience $audience)"
fi
"${cli[@]}" check-config --config "$config" | sed 's/^/  /' || die "the config does not pass check-config; fix $etc_dir/agent.yaml and run again"

# --- systemd ------------------------------------------------------------------------------------------------------
# The units name the default paths; an overridden path is written into them.
render_unit() {
  sed -e "s#/etc/nginx/deploy-agent#$nginx_dir#g" -e "s#/etc/deploy-agent#$etc_dir#g" -e "s#/var/lib/deploy-agent#$lib_dir#g" \
    -e "s#/var/backups/deploy-agent#$backup_dir#g" -e "s#/usr/share/doc/deploy-agent#$doc_dir#g" -e "s#^ExecStart=/usr/bin/env deploy-agent #ExecStart=/usr/bin/env $bin_dir/deploy-agent #" "$1"
}
echo "$me: systemd units in $unit_dir"
units=(deploy-agent.service deploy-agent-nginx-reload.path deploy-agent-nginx-reload.service)
units_changed=0
rendered=$scratch/unit
for unit in "${units[@]}"; do
  render_unit "$src/systemd/$unit" >"$rendered"
  if put_file "$rendered" "$root$unit_dir/$unit" 0644; then
    note "installed $unit_dir/$unit"
    units_changed=1
  fi
done

enable=(systemctl enable --now deploy-agent-nginx-reload.path deploy-agent.service)
systemctl=${DEPLOY_AGENT_SYSTEMCTL:-}
[ -n "$systemctl" ] || [ -n "$root" ] || [ "$(cat /proc/1/comm 2>/dev/null)" != systemd ] || systemctl=systemctl
if [ -n "$systemctl" ]; then
  [ "$units_changed" = 0 ] || "$systemctl" daemon-reload
  # One start per run at most: each start counts against the unit's start limit, and a restart right after the
  # first start would kill an agent still starting up.
  if "$systemctl" is-active --quiet deploy-agent.service; then
    "$systemctl" enable --quiet deploy-agent-nginx-reload.path deploy-agent.service
    "$systemctl" start deploy-agent-nginx-reload.path
    # An upgrade: the running agent picks up the new code (it lets a running deploy finish first).
    if [ "$changes" != 0 ]; then
      "$systemctl" restart deploy-agent.service
      echo "  restarted deploy-agent.service"
    fi
  else
    "$systemctl" "${enable[@]:1}"
    echo "  started deploy-agent.service (systemctl status deploy-agent; journalctl -u deploy-agent)"
  fi
else
  echo "$me: systemd is not running this machine${root:+ (or DEPLOY_AGENT_ROOT is set)}; to start the agent run:"
  echo "  systemctl daemon-reload && ${enable[*]}"
fi

echo "$me: done, $changes change(s)"
if [ "$changes" -gt 0 ] && [ -e "$keys/$key_name.key" ]; then
  echo "next: give CI the key id $key_name, $etc_dir/keys/$key_name.key and $etc_dir/keys/status.token (see docs/cli.md, CI setup),"
  echo "      then delete $etc_dir/keys/$key_name.key from this server; add your apps to $etc_dir/agent.yaml."
fi

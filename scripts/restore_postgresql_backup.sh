#!/usr/bin/env bash
# restore_postgresql_backup.sh — restore one PostgreSQL backup on this box, the way deploy-agent does it.
#
# Usage:
#   DATABASE_URL=postgres://user@host[:port]/dbname scripts/restore_postgresql_backup.sh <file> [--yes] [--app APP --env ENV]
#
#   <file>        a backup in the backup directory: an agent dump (<app>_<env>_<stamp>_<kind>_<id>.dump, with its
#                 .manifest.json beside it) or a legacy backup_YYYYMMDD_HHMMSS.sql.gz (gzip'd plain SQL)
#   --yes         do not ask for confirmation (otherwise the database name must be typed back)
#   --app/--env   name the pre-restore backup; read from the file name for agent dumps, required for legacy files
#
# Environment:
#   DATABASE_URL    the live database (required). A password in it (user-info or ?password=) is moved to PGPASSWORD; it never reaches argv.
#   PGPASSWORD      or ~/.pgpass (PGPASSFILE): the password, when the URL has none
#   BACKUP_DIR      where the pre-restore backup is written (default: the directory of <file>)
#   MAINTENANCE_DB  the database the rename runs from (default: postgres)
#
# Steps (the same as the agent's restore; each stops the script on failure and leaves the live database as it was):
#   1. verify: sha256 and size against the manifest (agent dumps), then a full read — `pg_restore -f /dev/null`
#      for custom-format dumps (chosen by the PGDMP magic bytes), `gzip -t` for .sql.gz;
#   2. confirm (unless --yes);
#   3. take a pre-restore backup of the live database into BACKUP_DIR (custom format + manifest, kind prerestore,
#      so the agent lists it) under the app+env backup lock;
#   4. restore into a new database <db>_restore_<id> (from template0, same encoding and collation), logged in as a
#      new role of the same name that owns that database and nothing else (no superuser, no CREATEDB/CREATEROLE,
#      member of nothing), so the backup's SQL can reach no other database, role or file; plain SQL goes through
#      psql with ON_ERROR_STOP=1 after a `\restrict <random key>`, so psql refuses every backslash command in it
#      (`\!`, `\connect`, ...); the dump's own \restrict / \unrestrict and ALTER … OWNER TO lines are left out.
#      Then what the role created passes to this script's role, and the role is dropped;
#   5. swap names in one transaction: <db> → <db>_old_<id>, <db>_restore_<id> → <db>, after ending this role's own
#      client sessions on <db> (never other roles', superusers' or autovacuum); retried 10 × 200 ms while busy.
#   The old database is kept as <db>_old_<id> (<id> = the pre-restore backup's id); drop it when satisfied:
#      psql -d postgres -c 'DROP DATABASE "<db>_old_<id>"'
#
# Needs: bash, psql, pg_dump, pg_restore, gzip, sha256sum, GNU coreutils; for legacy SQL a psql with \restrict
# (13.22, 14.19, 15.14, 16.10, 17.6, 18 or later). The role needs CREATEDB and CREATEROLE and must own <db>.
# Run it as the agent's user, so that the pre-restore backup belongs to the agent like its other backups.
# Exit status: 0 restored; 1 failed (live database unchanged); 2 usage; 3 not confirmed.
set -euo pipefail
umask 077

die() { echo "restore: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

file='' yes=0 app='' env=''
while [ $# -gt 0 ]; do
  case "$1" in
    --yes|-y) yes=1 ;;
    --app) app="${2:-}"; shift ;;
    --env) env="${2:-}"; shift ;;
    -h|--help) usage ;;
    -*) echo "restore: unknown option $1" >&2; usage ;;
    *) [ -z "$file" ] || usage; file="$1" ;;
  esac
  shift
done
[ -n "$file" ] || usage
[ -n "${DATABASE_URL:-}" ] || die "DATABASE_URL is not set"
[ -f "$file" ] && [ ! -L "$file" ] || die "$file is not a regular file"

# --- the database URL: split off the password, keep the rest for argv --------------------------------------------
url_re='^(postgres(ql)?://)(([^:@/]+)(:([^@/]*))?@)?([^/?@]+)/([A-Za-z_][A-Za-z0-9_]{0,62})(\?.*)?$'
[[ "$DATABASE_URL" =~ $url_re ]] || die "DATABASE_URL must be postgres://user@host[:port]/dbname"
scheme="${BASH_REMATCH[1]}" user="${BASH_REMATCH[4]}" password="${BASH_REMATCH[6]}" hostport="${BASH_REMATCH[7]}"
db="${BASH_REMATCH[8]}" query="${BASH_REMATCH[9]}"
# libpq also reads ?password= from the query (over the user-info's): it goes to PGPASSWORD too, never into argv.
if [ -n "$query" ]; then
  kept=''
  IFS='&' read -r -a params <<< "${query#\?}"
  for param in "${params[@]}"; do
    case "$param" in
      password=*) password="${param#password=}" ;;
      *) kept="${kept:+$kept&}$param" ;;
    esac
  done
  query="${kept:+?$kept}"
fi
if [ -n "$password" ]; then
  PGPASSWORD="$(printf '%b' "${password//%/\\x}")"
  export PGPASSWORD
fi
userpart="${user:+$user@}"
url_for() { printf '%s%s%s/%s%s' "$scheme" "$userpart" "$hostport" "$1" "$query"; }
live_url="$(url_for "$db")"
admin_url="$(url_for "${MAINTENANCE_DB:-postgres}")"
export PGCONNECT_TIMEOUT="${PGCONNECT_TIMEOUT:-10}"
psql_on() { local target="$1"; shift; psql -X -q --no-password -v ON_ERROR_STOP=1 --dbname="$target" "$@"; }

# --- 1. verify ----------------------------------------------------------------------------------------------------
name="$(basename "$file")"
src_dir="$(cd "$(dirname "$file")" && pwd)"
backup_dir="${BACKUP_DIR:-$src_dir}"
name_re='^([a-z][a-z0-9-]{0,31})_([a-z][a-z0-9-]{0,31})_([0-9]{8}T[0-9]{6}Z)_(nightly|predeploy|manual|prerestore)_([0-9a-f]{8})\.dump$'
source_id="$name"
if [[ "$name" =~ $name_re ]]; then
  app="${app:-${BASH_REMATCH[1]}}" env="${env:-${BASH_REMATCH[2]}}" source_id="${BASH_REMATCH[5]}"
  manifest="$src_dir/${name%.dump}.manifest.json"
  [ -f "$manifest" ] || die "$name has no manifest: it never completed"
  want_sha="$(sed -n 's/^  "sha256": "\([0-9a-f]\{64\}\)",\{0,1\}$/\1/p' "$manifest")"
  want_bytes="$(sed -n 's/^  "bytes": \([0-9]*\),\{0,1\}$/\1/p' "$manifest")"
  [ "$(stat -c %s "$file")" = "$want_bytes" ] || die "$name has $(stat -c %s "$file") bytes, its manifest says $want_bytes"
  [ "$(sha256sum "$file" | cut -d' ' -f1)" = "$want_sha" ] || die "$name does not match the sha256 in its manifest"
fi
[[ "$app" =~ ^[a-z][a-z0-9-]{0,31}$ && "$env" =~ ^[a-z][a-z0-9-]{0,31}$ ]] || die "name the pre-restore backup with --app and --env"

magic="$(head -c 5 "$file" | od -An -tx1 | tr -d ' \n')"
case "$magic" in
  5047444d50) format=custom ;;                  # PGDMP
  1f8b*) format=sql.gz ;;
  *) die "$name is neither a pg_dump custom-format dump nor gzip'd SQL" ;;
esac
# The name says what the file must be: a custom-format dump under another name would skip the manifest check.
if [ -n "${manifest:-}" ]; then
  [ "$format" = custom ] || die "$name is not a pg_dump custom-format dump, as its name says"
else
  [ "$format" = sql.gz ] || die "$name is not gzip'd SQL; only agent dumps (with a manifest) are restored with pg_restore"
fi
echo "restore: verifying $name ($format)"
if [ "$format" = custom ]; then
  pg_restore -f /dev/null "$file" || die "$name failed the full read (pg_restore); not restoring"
else
  gzip -t "$file" || die "$name is not a sound gzip file; not restoring"
  sql_head() { gzip -dc "$file" 2>/dev/null | head -c 65536 || true; }
  [ "$(sql_head | head -c 5)" != PGDMP ] || die "$name is not gzip'd SQL: it holds a pg_dump custom-format dump"
  [ "$(sql_head | wc -c)" = "$(sql_head | tr -d '\000' | wc -c)" ] || die "$name is not gzip'd SQL: it holds binary data"
  # psql obeys backslash commands anywhere in a script; only one with \restrict can be told to refuse them all.
  psql_version="$(psql --version)"
  [[ "$psql_version" =~ \(PostgreSQL\)\ ([0-9]+)(\.([0-9]+))? ]] || die "cannot tell the version of psql from: $psql_version"
  major="${BASH_REMATCH[1]}" minor="${BASH_REMATCH[3]:-0}"
  case "$major" in 13) since=22 ;; 14) since=19 ;; 15) since=14 ;; 16) since=10 ;; 17) since=6 ;; *) since='' ;; esac
  if ! { [ "$major" -ge 18 ] || { [ -n "$since" ] && [ "$minor" -ge "$since" ]; }; }; then
    die "psql $major.$minor has no \\restrict, which a legacy SQL restore needs; install psql 13.22, 14.19, 15.14, 16.10, 17.6 or 18 and later"
  fi
fi

# The backup is loaded as a role made for it: this role must be able to create it (and the scratch database).
privileges="$(psql_on "$live_url" -tA <<'SQL'
SELECT rolname || '|' || CASE WHEN rolsuper THEN '' ELSE concat_ws(' ', CASE WHEN NOT rolcreatedb THEN 'CREATEDB' END, CASE WHEN NOT rolcreaterole THEN 'CREATEROLE' END) END
  FROM pg_roles WHERE rolname = current_user
SQL
)" || die "database $db is unreachable"
if [ -n "${privileges#*|}" ]; then
  die "the database role ${privileges%%|*} needs ${privileges#*|} to restore (a restore runs as a new role that owns only the scratch database); grant it with ALTER ROLE \"${privileges%%|*}\" ${privileges#*|}"
fi

# --- 2. confirm ---------------------------------------------------------------------------------------------------
if [ "$yes" != 1 ]; then
  echo "This replaces database \"$db\" on $hostport with $name."
  echo "The current database is kept as ${db}_old_<id> and backed up first."
  printf 'Type the database name to confirm: ' >&2
  read -r answer || answer=''
  [ "$answer" = "$db" ] || { echo "restore: not confirmed; nothing done" >&2; exit 3; }
fi

# --- 3. pre-restore backup, under the agent's lock for app+env ----------------------------------------------------
mkdir -p "$backup_dir"
lock="$backup_dir/.lock-${app}_${env}"
take_lock() {
  if ( set -C; echo "$$" > "$lock" ) 2>/dev/null; then return 0; fi
  local owner; owner="$(cat "$lock" 2>/dev/null || true)"
  if [[ "$owner" =~ ^[0-9]+$ ]] && ! kill -0 "$owner" 2>/dev/null; then
    rm -f "$lock"
    ( set -C; echo "$$" > "$lock" ) 2>/dev/null && return 0
  fi
  die "a backup of $app/$env is running (lock $lock, pid ${owner:-?})"
}
restore_db='' restore_role='' partial=''
cleanup() {
  [ -z "$partial" ] || rm -f "$partial"
  if [ -n "$restore_db" ]; then psql_on "$live_url" -c "DROP DATABASE IF EXISTS \"$restore_db\"" >/dev/null 2>&1 || true; fi
  if [ -n "$restore_role" ]; then psql_on "$live_url" -c "DROP ROLE IF EXISTS \"$restore_role\"" >/dev/null 2>&1 || true; fi
  if [ "$(cat "$lock" 2>/dev/null || true)" = "$$" ]; then rm -f "$lock"; fi
}
trap cleanup EXIT
take_lock

json() { local s="${1//\\/\\\\}"; printf '"%s"' "${s//\"/\\\"}"; }
started_ms="$(date +%s%3N)"
epoch="$(date -u +%s)"
id="$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
base="${app}_${env}_$(date -u -d "@$epoch" +%Y%m%dT%H%M%SZ)_prerestore_${id}"
server_version="$(psql_on "$live_url" -tAc 'SHOW server_version')" || die "database $db is unreachable"
dump_version="$(pg_dump --version)"
echo "restore: pre-restore backup $base.dump"
partial="$backup_dir/$base.dump.partial"
pg_dump --format=custom --no-password --dbname="$live_url" > "$partial" || die "the pre-restore backup failed; nothing restored"
sync "$partial"
mv "$partial" "$backup_dir/$base.dump"
partial=''
sync "$backup_dir"
pre_bytes="$(stat -c %s "$backup_dir/$base.dump")"
pre_sha="$(sha256sum "$backup_dir/$base.dump" | cut -d' ' -f1)"
manifest_tmp="$backup_dir/.$base.manifest.json.$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n').tmp"
cat > "$manifest_tmp" <<JSON
{
  "v": 1,
  "id": "$id",
  "app": "$app",
  "env": "$env",
  "kind": "prerestore",
  "createdAt": "$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)",
  "file": "$base.dump",
  "bytes": $pre_bytes,
  "sha256": "$pre_sha",
  "pgServerVersion": $(json "$server_version"),
  "pgDumpVersion": $(json "$dump_version"),
  "durationMs": $(( $(date +%s%3N) - started_ms )),
  "verified": null,
  "pinnedBy": $(json "restore:$source_id")
}
JSON
sync "$manifest_tmp"
mv "$manifest_tmp" "$backup_dir/$base.manifest.json"
sync "$backup_dir"
rm -f "$lock"

# --- 4. restore into <db>_restore_<id> ----------------------------------------------------------------------------
suffix_restore="_restore_$id" suffix_old="_old_$id"
restore_db="${db:0:$((63 - ${#suffix_restore}))}$suffix_restore"
old_db="${db:0:$((63 - ${#suffix_old}))}$suffix_old"
create_sql="$(psql_on "$live_url" -tA <<'SQL'
SELECT format('TEMPLATE template0 ENCODING %L LC_COLLATE %L LC_CTYPE %L', pg_encoding_to_char(encoding), datcollate, datctype)
  FROM pg_database WHERE datname = current_database()
SQL
)" || die "cannot read the settings of $db"
echo "restore: restoring into $restore_db"
# The role is named like the database it alone owns; its password is random and never in argv.
restore_role="$restore_db"
restore_pw="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
psql_on "$live_url" >/dev/null <<SQL || die "cannot create the restore role and the scratch database"
CREATE ROLE "$restore_role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD '$restore_pw';
GRANT "$restore_role" TO CURRENT_USER;
CREATE DATABASE "$restore_db" $create_sql OWNER "$restore_role";
SQL
restore_url="$(printf '%s%s@%s/%s%s' "$scheme" "$restore_role" "$hostport" "$restore_db" "$query")"
# Fidelity only, not safety: drops the dump's own \restrict / \unrestrict lines (psql refuses a second \restrict)
# and ALTER … OWNER TO lines (the restore role may not give objects away; pg_restore's --no-owner), outside COPY data.
filter='BEGIN { copy = 0 }
  copy { if ($0 == "\\." || $0 == "\\.\r") copy = 0; print; next }
  /^\\(un)?restrict([ \t\r]|$)/ { next }
  /^ALTER [A-Z ]+ .* OWNER TO [^;]+;[ \t\r]*$/ { next }
  /^COPY / && /FROM stdin;\r?$/ { copy = 1 }
  { print }'
if [ "$format" = custom ]; then
  PGPASSWORD="$restore_pw" pg_restore --no-owner --exit-on-error --no-password --dbname="$restore_url" "$file" \
    || die "pg_restore failed; $db is unchanged ($restore_db dropped)"
else
  key="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
  { printf '\\restrict %s\n' "$key"; gzip -dc "$file" | awk "$filter"; } | PGPASSWORD="$restore_pw" psql_on "$restore_url" >/dev/null \
    || die "the SQL restore failed; $db is unchanged ($restore_db dropped)"
fi
# What the restore role created, the database included, passes to this role; the restore role is dropped.
psql_on "$(url_for "$restore_db")" >/dev/null <<SQL || die "cannot take the restored database back from $restore_role; $db is unchanged"
ALTER ROLE "$restore_role" NOLOGIN;
SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '$restore_role';
REASSIGN OWNED BY "$restore_role" TO CURRENT_USER;
DROP OWNED BY "$restore_role";
ALTER DATABASE "$restore_db" RESET ALL;
SQL
psql_on "$live_url" -c "DROP ROLE \"$restore_role\"" >/dev/null || die "cannot drop the restore role $restore_role; $db is unchanged"
restore_role=''

# --- 5. swap names ------------------------------------------------------------------------------------------------
echo "restore: swapping $db → $old_db, $restore_db → $db"
swapped=0
swap_err="$(mktemp)"
for _ in 1 2 3 4 5 6 7 8 9 10; do
  if psql_on "$admin_url" -v VERBOSITY=verbose >/dev/null 2>"$swap_err" <<SQL
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
 WHERE datname = '$db' AND usename = current_user AND backend_type = 'client backend' AND pid <> pg_backend_pid();
BEGIN;
ALTER DATABASE "$db" RENAME TO "$old_db";
ALTER DATABASE "$restore_db" RENAME TO "$db";
COMMIT;
SQL
  then swapped=1; break; fi
  grep -q '55006' "$swap_err" || { cat "$swap_err" >&2; break; }   # object_in_use: retry; anything else: stop
  sleep 0.2
done
rm -f "$swap_err"
[ "$swapped" = 1 ] || die "$db stayed in use by sessions this role may not end; nothing swapped ($restore_db dropped)"
restore_db=''
echo "restore: done. $db now holds $name; the previous database is kept as $old_db;"
echo "restore: pre-restore backup: $backup_dir/$base.dump"

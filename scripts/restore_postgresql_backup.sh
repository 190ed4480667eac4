#!/usr/bin/env bash
# restore_postgresql_backup.sh — restore one PostgreSQL backup on this box, the way deploy-agent does it.
#
# Usage:
#   DATABASE_URL=<the app's URL> scripts/restore_postgresql_backup.sh <file> [--yes] [--app APP --env ENV]
#       [--db-user ROLE [--password-file FILE]]
#
#   <file>        a backup in the backup directory: an agent dump (<app>_<env>_<stamp>_<kind>_<id>.dump, with its
#                 .manifest.json beside it) or a legacy backup_YYYYMMDD_HHMMSS.sql.gz (gzip'd plain SQL)
#   --yes         do not ask for confirmation (otherwise the database name must be typed back)
#   --app/--env   name the pre-restore backup. Agent dumps: read from the file name. Legacy files: by default the
#                 one app+env whose agent dumps in BACKUP_DIR hold this database (pg_restore --list's dbname)
#   --db-user     restore as this database role instead of the URL's user (whose password is then not used): the
#                 backup role that owns the database, when DATABASE_URL is the app's own, less privileged role
#   --password-file  the password of the role (e.g. the env's database.passwordFile; trailing whitespace trimmed)
#
# Example (the app's env file as it is; the backup role's password from the agent's passwordFile):
#   sudo -u deploy-agent DATABASE_URL='postgresql+asyncpg://app:p%40ss@127.0.0.1:5432/appdb?prepared_statement_cache_size=0' \
#     scripts/restore_postgresql_backup.sh /var/backups/deploy-agent/backup_20261201_030000.sql.gz \
#     --db-user appdb_owner --password-file /etc/deploy-agent/secrets/appdb.password
#
# Environment:
#   DATABASE_URL    the live database (required; `sudo` drops it: put it after sudo, as above). Any URL the app's
#                   driver takes: postgresql://, postgres:// or postgresql+<driver>:// (the +driver is dropped for
#                   libpq); the password (user-info or ?password=) is URL-decoded and moved to PGPASSWORD, never into
#                   argv; query parameters libpq does not know are dropped with a note (asyncpg's
#                   prepared_statement_cache_size, ...), asyncpg's ssl=<mode> becomes sslmode=<mode>, a ?user= moves
#                   into the URL's user, ?dbname= is ignored (the path names the database)
#   PGPASSWORD      or ~/.pgpass (PGPASSFILE): the password, when neither the URL nor --password-file gives one
#   BACKUP_DIR      where the pre-restore backup is written (default: the directory of <file>)
#   MAINTENANCE_DB  the database the rename runs from (default: postgres)
#
# Before anything is changed (before the confirmation), every problem is reported at once: a file this OS user
# cannot read, a BACKUP_DIR it cannot write, a legacy file with no app+env to name its pre-restore backup, a role
# that cannot restore (with the role to use or what to grant).
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
# (13.22, 14.19, 15.14, 16.10, 17.6, 18 or later). The role needs CREATEDB and CREATEROLE and must own <db> (or
# be a member of its owner): the backup role, not the app's (docs/backups.md, "Database roles"). Run it as the
# agent's OS user, so that the pre-restore backup belongs to the agent like its other backups (run as root, the
# files it writes are given to BACKUP_DIR's owner).
# Exit status: 0 restored; 1 failed (live database unchanged); 2 usage; 3 not confirmed.
set -euo pipefail
umask 077

die() { echo "restore: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

file='' yes=0 app='' env='' db_user='' password_file=''
while [ $# -gt 0 ]; do
  case "$1" in
    --yes|-y) yes=1 ;;
    --app) app="${2:-}"; shift ;;
    --env) env="${2:-}"; shift ;;
    --db-user) db_user="${2:-}"; shift ;;
    --password-file) password_file="${2:-}"; shift ;;
    -h|--help) usage ;;
    -*) echo "restore: unknown option $1" >&2; usage ;;
    *) [ -z "$file" ] || usage; file="$1" ;;
  esac
  shift
done
[ -n "$file" ] || usage
[ -n "${DATABASE_URL:-}" ] || die "DATABASE_URL is not set (with sudo, set it after sudo: sudo -u <user> DATABASE_URL=… $0 …)"

# --- the database URL: the app's form → what libpq takes; the password to PGPASSWORD, the rest for argv -----------
url_re='^postgres(ql)?(\+[A-Za-z0-9_]+)?://(([^:@/]+)(:([^@/]*))?@)?([^/?@]+)/([A-Za-z_][A-Za-z0-9_]{0,62})(\?.*)?$'
[[ "$DATABASE_URL" =~ $url_re ]] || die "DATABASE_URL must be postgresql[+driver]://user[:password]@host[:port]/dbname[?params]"
# The +driver (asyncpg, psycopg, ...) is for the app's SQLAlchemy; libpq knows only the plain scheme.
scheme='postgresql://' user="${BASH_REMATCH[4]}" password="${BASH_REMATCH[6]}" hostport="${BASH_REMATCH[7]}"
db="${BASH_REMATCH[8]}" query="${BASH_REMATCH[9]}"
# libpq refuses a URL with any parameter it does not know, and an app's URL often has its driver's: keep libpq's,
# map asyncpg's ssl=, move user/password out, drop the rest (named, never with their values).
libpq_params=' host hostaddr port passfile require_auth channel_binding connect_timeout client_encoding options
  application_name fallback_application_name keepalives keepalives_idle keepalives_interval keepalives_count
  tcp_user_timeout gssencmode sslmode requiressl sslnegotiation sslcompression sslcert sslkey sslpassword sslcertmode
  sslrootcert sslcrl sslcrldir sslsni requirepeer ssl_min_protocol_version ssl_max_protocol_version krbsrvname
  gsslib gssdelegation service target_session_attrs load_balance_hosts '
if [ -n "$query" ]; then
  kept='' dropped=''
  IFS='&' read -r -a params <<< "${query#\?}"
  for param in "${params[@]}"; do
    key="${param%%=*}" value="${param#*=}"
    case "$key" in
      '') ;;
      password) password="$value" ;;                 # libpq reads it over the user-info's: so do we
      user) user="${user:-$value}" ;;                # a ?user= would override the restore role's login
      dbname|database) dropped="$dropped $key" ;;    # the path names the database; each step names its own
      ssl)                                           # asyncpg's spelling of sslmode (libpq takes only ssl=true)
        case "$value" in
          true) kept="${kept:+$kept&}sslmode=require" ;;
          false) kept="${kept:+$kept&}sslmode=disable" ;;
          disable|allow|prefer|require|verify-ca|verify-full) kept="${kept:+$kept&}sslmode=$value" ;;
          *) dropped="$dropped ssl" ;;
        esac ;;
      *) if [[ "$libpq_params" == *" $key "* && "$param" == *=* ]]; then kept="${kept:+$kept&}$param"; else dropped="$dropped $key"; fi ;;
    esac
  done
  query="${kept:+?$kept}"
  [ -z "$dropped" ] || echo "restore: ignoring${dropped} in DATABASE_URL (for the app's driver, not libpq)" >&2
fi
# URL-decoded (p%40ss → p@ss); backslashes first, so that printf %b turns only the %XX into bytes.
url_decode() { local s="${1//\\/\\\\}"; printf '%b' "${s//%/\\x}"; }
if [ -n "$db_user" ]; then
  # Another role: the URL's password is the URL user's, not this one's.
  [[ "$db_user" =~ ^[A-Za-z_][A-Za-z0-9_.-]{0,62}$ ]] || die "--db-user must be a plain role name"
  user="$db_user" password=''
fi
if [ -n "$password_file" ]; then
  [ -r "$password_file" ] || die "--password-file $password_file is not readable by OS user $(id -un)"
  PGPASSWORD="$(cat "$password_file")"
  PGPASSWORD="${PGPASSWORD%"${PGPASSWORD##*[![:space:]]}"}"
  export PGPASSWORD
elif [ -n "$password" ]; then
  PGPASSWORD="$(url_decode "$password")"
  export PGPASSWORD
fi
role="$(url_decode "$user")"
userpart="${user:+$user@}"
url_for() { printf '%s%s%s/%s%s' "$scheme" "$userpart" "$hostport" "$1" "$query"; }
live_url="$(url_for "$db")"
admin_url="$(url_for "${MAINTENANCE_DB:-postgres}")"
export PGCONNECT_TIMEOUT="${PGCONNECT_TIMEOUT:-10}"
psql_on() { local target="$1"; shift; psql -X -q --no-password -v ON_ERROR_STOP=1 --dbname="$target" "$@"; }

# --- 1. check everything that would stop the restore, and say it all at once, before anything is done -------------
me="$(id -un)"
problems=()
name="$(basename "$file")"
src_dir="$(dirname "$file")"
if [ -d "$src_dir" ] && ! [ -x "$src_dir" ]; then
  # The agent's backup directory is the agent's (0700): another OS user cannot even see the file.
  problems+=("OS user $me cannot look into $src_dir: run this as its owner (sudo -u $(stat -c %U "$src_dir") DATABASE_URL=… $0 …)")
  src_dir="$(realpath -ms "$src_dir")"
else
  [ -e "$file" ] || die "$file does not exist"
  [ -f "$file" ] && [ ! -L "$file" ] || die "$file is not a regular file"
  src_dir="$(cd "$src_dir" && pwd)"
  [ -r "$file" ] || problems+=("OS user $me cannot read $file: run this as the agent's user (sudo -u $(stat -c %U "$file") …)")
fi
backup_dir="${BACKUP_DIR:-$src_dir}"
name_re='^([a-z][a-z0-9-]{0,31})_([a-z][a-z0-9-]{0,31})_([0-9]{8}T[0-9]{6}Z)_(nightly|predeploy|manual|prerestore)_([0-9a-f]{8})\.dump$'
[ -n "$app" ] || [ -z "$env" ] || die "--app and --env go together"
[ -n "$env" ] || [ -z "$app" ] || die "--app and --env go together"
source_id="$name" manifest=''
if [[ "$name" =~ $name_re ]]; then
  app="${app:-${BASH_REMATCH[1]}}" env="${env:-${BASH_REMATCH[2]}}" source_id="${BASH_REMATCH[5]}"
  manifest="$src_dir/${name%.dump}.manifest.json"
fi
if [ -d "$backup_dir" ]; then
  [ -w "$backup_dir" ] && [ -x "$backup_dir" ] \
    || problems+=("OS user $me cannot write the pre-restore backup into $backup_dir: run this as its owner (sudo -u $(stat -c %U "$backup_dir") DATABASE_URL=… $0 …) or set BACKUP_DIR")
elif ! [ -w "$(dirname "$backup_dir")" ]; then
  problems+=("BACKUP_DIR $backup_dir does not exist and OS user $me cannot create it")
fi

# A legacy file names no app or env: the pre-restore backup takes those of the agent's dumps of this database.
if [ -z "$app" ]; then
  seen=' ' found=()
  for m in $(ls -r "$backup_dir" 2>/dev/null | grep '\.manifest\.json$' || true); do
    [[ "${m%.manifest.json}.dump" =~ $name_re ]] || continue
    pair="${BASH_REMATCH[1]}/${BASH_REMATCH[2]}"
    [[ "$seen" != *" $pair "* ]] || continue
    seen="$seen$pair "
    # The newest dump of each app+env says which database it holds (its TOC's dbname; the data is not read).
    dump_db="$(pg_restore --list "$backup_dir/${m%.manifest.json}.dump" 2>/dev/null | sed -n 's/^;     dbname: //p' || true)"
    [ "$dump_db" != "$db" ] || found+=("$pair")
  done
  if [ "${#found[@]}" = 1 ]; then
    app="${found[0]%/*}" env="${found[0]#*/}"
    echo "restore: the pre-restore backup is named for $app/$env, whose backups in $backup_dir hold database $db"
  elif [ "${#found[@]}" = 0 ]; then
    problems+=("no agent backup readable in $backup_dir holds database $db, so the pre-restore backup has no app and env to be named for: pass --app APP --env ENV (the env whose database is $db in the agent's config)")
  else
    problems+=("agent backups of database $db in $backup_dir belong to ${found[*]}: pass --app APP --env ENV for the one being restored")
  fi
fi

# The backup is loaded as a role made for it, and the names are swapped: this role must be able to create both
# and own the live database. An app's role should not (docs/backups.md): then say which role to restore as.
IFS=$'\x1f' read -r rolname missing owns owner owner_missing < <(psql_on "$live_url" -tA -F $'\x1f' <<'SQL' || true
SELECT r.rolname,
       CASE WHEN r.rolsuper THEN '' ELSE concat_ws(' ', CASE WHEN NOT r.rolcreatedb THEN 'CREATEDB' END, CASE WHEN NOT r.rolcreaterole THEN 'CREATEROLE' END) END,
       r.rolsuper OR pg_has_role(r.oid, d.datdba, 'USAGE'),
       o.rolname,
       CASE WHEN o.rolsuper THEN '' ELSE concat_ws(' ', CASE WHEN NOT o.rolcreatedb THEN 'CREATEDB' END, CASE WHEN NOT o.rolcreaterole THEN 'CREATEROLE' END) END
  FROM pg_roles r, pg_database d JOIN pg_roles o ON o.oid = d.datdba
 WHERE r.rolname = current_user AND d.datname = current_database()
SQL
)
if [ -z "${rolname:-}" ]; then
  problems+=("cannot connect to database $db on $hostport as role ${role:-$me} (psql's message above)")
elif [ "$owns" != t ]; then
  grant=''
  [ -z "$owner_missing" ] || grant=", and a superuser grants that role what it lacks: ALTER ROLE \"$owner\" $owner_missing"
  problems+=("role $rolname may not restore $db: it does not own it${missing:+ and lacks $missing} (rightly, for an app's role: do not grant it more). Restore as the backup role that owns $db: add --db-user $owner (its password through --password-file FILE, PGPASSWORD or ~/.pgpass)$grant")
elif [ -n "$missing" ]; then
  problems+=("role $rolname owns $db but lacks $missing, which a restore needs (it loads the backup as a new role that owns only the scratch database): a superuser grants it with ALTER ROLE \"$rolname\" $missing")
fi
if [ "${#problems[@]}" -gt 0 ]; then
  for problem in "${problems[@]}"; do echo "restore: $problem" >&2; done
  die "nothing done"
fi

# --- verify -------------------------------------------------------------------------------------------------------
if [ -n "$manifest" ]; then
  [ -f "$manifest" ] || die "$name has no manifest: it never completed"
  want_sha="$(sed -n 's/^  "sha256": "\([0-9a-f]\{64\}\)",\{0,1\}$/\1/p' "$manifest")"
  want_bytes="$(sed -n 's/^  "bytes": \([0-9]*\),\{0,1\}$/\1/p' "$manifest")"
  [ "$(stat -c %s "$file")" = "$want_bytes" ] || die "$name has $(stat -c %s "$file") bytes, its manifest says $want_bytes"
  [ "$(sha256sum "$file" | cut -d' ' -f1)" = "$want_sha" ] || die "$name does not match the sha256 in its manifest"
fi
[[ "$app" =~ ^[a-z][a-z0-9-]{0,31}$ && "$env" =~ ^[a-z][a-z0-9-]{0,31}$ ]] || die "--app and --env must be names like the agent's (a-z, 0-9, -)"

magic="$(head -c 5 "$file" | od -An -tx1 | tr -d ' \n')"
case "$magic" in
  5047444d50) format=custom ;;                  # PGDMP
  1f8b*) format=sql.gz ;;
  *) die "$name is neither a pg_dump custom-format dump nor gzip'd SQL" ;;
esac
# The name says what the file must be: a custom-format dump under another name would skip the manifest check.
if [ -n "$manifest" ]; then
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
# Run as root, the pre-restore backup is given to the directory's owner (the agent), which lists and prunes it.
[ "$(id -u)" != 0 ] || chown --reference="$backup_dir" "$backup_dir/$base.dump" "$backup_dir/$base.manifest.json"
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
  grep -q '55006' "$swap_err" || { cat "$swap_err" >&2; swapped=failed; break; }   # object_in_use: retry; else stop
  sleep 0.2
done
rm -f "$swap_err"
[ "$swapped" != failed ] || die "the swap failed (psql's message above); nothing swapped ($restore_db dropped)"
[ "$swapped" = 1 ] || die "$db stayed in use by sessions this role may not end; nothing swapped ($restore_db dropped)"
restore_db=''
echo "restore: done. $db now holds $name; the previous database is kept as $old_db;"
echo "restore: pre-restore backup: $backup_dir/$base.dump"

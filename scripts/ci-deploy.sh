#!/usr/bin/env bash
# Deploys one ref of an app env through deploy-agent from any CI system and follows it to the end: exits 0 only
# when the deploy SUCCEEDED (FAILED, ROLLED_BACK, CANCELLED or any error exit non-zero). A production env with
# `requireApproval` waits in AWAITING_APPROVAL until an operator runs `deploy-agent approve <id>`; this keeps
# following meanwhile. The GitHub workflow (.github/workflows/deploy.yml) runs this very script.
#
#   ci-deploy.sh <app> <env> <ref>        (or DEPLOY_APP, DEPLOY_ENV, DEPLOY_REF)
#
# Required environment:
#   DEPLOY_AGENT_URL            the agent, e.g. https://web-1.example.com:8787
#   DEPLOY_AGENT_KEY_ID         the signing key's id in the agent config
#   DEPLOY_AGENT_KEY            the private key (Ed25519 PEM or HMAC secret) itself, or
#   DEPLOY_AGENT_KEY_FILE       a file holding it
#   DEPLOY_AGENT_STATUS_TOKEN   the agent's status token (following a deploy reads its log), or
#   DEPLOY_AGENT_STATUS_TOKEN_FILE
# Optional: DEPLOY_COMMIT (pin the 40-hex commit the ref must resolve to), DEPLOY_REASON, DEPLOY_AGENT_AUDIENCE
# (default: the URL's host), DEPLOY_AGENT_CLI (default: `deploy-agent` on PATH). Installs nothing.
set -euo pipefail

me=ci-deploy
app=${1:-${DEPLOY_APP:-}}
env=${2:-${DEPLOY_ENV:-}}
ref=${3:-${DEPLOY_REF:-}}
cli=${DEPLOY_AGENT_CLI:-deploy-agent}

# Every missing input is named at once, not one per run.
missing=()
[ -n "$app" ] || missing+=("app (first argument or DEPLOY_APP)")
[ -n "$env" ] || missing+=("env (second argument or DEPLOY_ENV)")
[ -n "$ref" ] || missing+=("ref (third argument or DEPLOY_REF): the tag or branch to deploy")
[ -n "${DEPLOY_AGENT_URL:-}" ] || missing+=("DEPLOY_AGENT_URL: the agent's URL, e.g. https://web-1.example.com:8787")
[ -n "${DEPLOY_AGENT_KEY_ID:-}" ] || missing+=("DEPLOY_AGENT_KEY_ID: the signing key's id in the agent config")
[ -n "${DEPLOY_AGENT_KEY:-}${DEPLOY_AGENT_KEY_FILE:-}" ] || missing+=("DEPLOY_AGENT_KEY (the private key) or DEPLOY_AGENT_KEY_FILE (a file holding it)")
[ -n "${DEPLOY_AGENT_STATUS_TOKEN:-}${DEPLOY_AGENT_STATUS_TOKEN_FILE:-}" ] ||
  missing+=("DEPLOY_AGENT_STATUS_TOKEN or DEPLOY_AGENT_STATUS_TOKEN_FILE: the agent's status token, to follow the deploy")
if [ "${#missing[@]}" -gt 0 ]; then
  echo "$me: missing:" >&2
  printf '  %s\n' "${missing[@]}" >&2
  echo "usage: $me <app> <env> <ref>" >&2
  exit 2
fi
if ! command -v "$cli" >/dev/null 2>&1; then
  echo "$me: the deploy-agent CLI ($cli) was not found: put it on PATH or set DEPLOY_AGENT_CLI" >&2
  exit 2
fi

# CI systems often pass an unset secret as an empty string; the CLI must see it as absent, not as an empty token.
for name in DEPLOY_AGENT_KEY_FILE DEPLOY_AGENT_STATUS_TOKEN DEPLOY_AGENT_STATUS_TOKEN_FILE DEPLOY_AGENT_AUDIENCE; do
  [ -n "${!name:-}" ] || unset "$name"
done

# A key given as a secret's value goes to a file only this user can read, removed on exit.
if [ -z "${DEPLOY_AGENT_KEY_FILE:-}" ]; then
  key_file=$(umask 077 && mktemp "${RUNNER_TEMP:-${TMPDIR:-/tmp}}/deploy-agent-key.XXXXXX")
  trap 'rm -f "$key_file"' EXIT
  (umask 077 && printf '%s\n' "$DEPLOY_AGENT_KEY" >"$key_file")
  export DEPLOY_AGENT_KEY_FILE=$key_file
fi
unset DEPLOY_AGENT_KEY

args=(deploy --follow)
[ -z "${DEPLOY_COMMIT:-}" ] || args+=(--commit "$DEPLOY_COMMIT")
[ -z "${DEPLOY_REASON:-}" ] || args+=(--reason "$DEPLOY_REASON")
# After `--` no app, env or ref can be read as a flag.
args+=(-- "$app" "$env" "$ref")

echo "$me: deploying $app/$env $ref via $DEPLOY_AGENT_URL"
status=0
"$cli" "${args[@]}" || status=$?
if [ "$status" -ne 0 ]; then
  echo "$me: the deploy of $app/$env $ref did not succeed (exit $status)" >&2
  exit "$status"
fi
echo "$me: $app/$env $ref SUCCEEDED"

#!/bin/sh
# `isthmus-make-tokens NAMESPACE/SERVICE_ACCOUNT...`: the compose file's one-shot bootstrap step.
# For each workload identity, mints a bootstrap token with the CA in citadel's state directory
# (`isthmus token create`) and writes it to $ISTHMUS_TOKENS_DIR/<service account>/token, where compose
# mounts one volume per service account; each VM container mounts only its own volume, read-only.
# Run as root so it can hand the files to the image's isthmus user (uid 10001).
set -eu
tokens_dir=${ISTHMUS_TOKENS_DIR:-/var/lib/isthmus/tokens}
state_dir=${ISTHMUS_CITADEL_STATE:-/var/lib/isthmus/citadel}
ttl=${ISTHMUS_TOKEN_TTL:-720h}
owner=${ISTHMUS_TOKEN_OWNER:-10001:10001}
wait_seconds=${ISTHMUS_WAIT_SECONDS:-60}

[ "$#" -gt 0 ] || { echo "usage: isthmus-make-tokens NAMESPACE/SERVICE_ACCOUNT..." >&2; exit 2; }

# citadel writes its CA before it listens, but do not rely on the health check's timing.
waited=0
until [ -s "$state_dir/ca-cert.pem" ] && [ -s "$state_dir/ca-key.pem" ]; do
  if [ "$waited" -ge "$wait_seconds" ]; then
    echo "isthmus-make-tokens: no CA in $state_dir after ${wait_seconds}s (is citadel's state volume mounted?)" >&2
    exit 1
  fi
  sleep 1
  waited=$((waited + 1))
done

for identity in "$@"; do
  case "$identity" in
    */*) namespace=${identity%%/*}; account=${identity#*/} ;;
    *) echo "isthmus-make-tokens: '$identity' is not NAMESPACE/SERVICE_ACCOUNT" >&2; exit 2 ;;
  esac
  dir="$tokens_dir/$account"
  mkdir -p "$dir"
  tmp="$dir/.token.$$"
  isthmus token create --state-dir "$state_dir" --namespace "$namespace" --service-account "$account" \
    --ttl "$ttl" >"$tmp"
  chmod 0400 "$tmp"
  if [ "$(id -u)" = 0 ]; then
    chown "$owner" "$tmp"
  fi
  mv -f "$tmp" "$dir/token"
  echo "bootstrap token for $namespace/$account (ttl $ttl) -> $dir/token"
done

#!/usr/bin/env bash
# Start every service the tests use (each scripts/services/<name>.sh), collect the env lines
# they print into .services.env at the repo root, for `make test` to source:
#
#   bash scripts/services/all.sh          # all of them
#   bash scripts/services/all.sh kafka    # only the named ones (the file keeps the others' lines)
#   set -a; . ./.services.env; set +a
#
# Each script is idempotent, so a second run only checks that everything answers (seconds).
# Exits non-zero when any service failed to start (after trying all of them), naming it.
source "$(dirname "$0")/_lib.sh"

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ENV_FILE=${BEAM_ETL_SERVICES_ENV:-$ROOT/.services.env}
LOGS=$RUN_DIR/logs
mkdir -p "$LOGS"

if [ $# -gt 0 ]; then
  names=("$@")
else
  names=()
  for script in "$HERE"/*.sh; do
    name=$(basename "$script" .sh)
    case $name in _*|all) continue ;; esac
    names+=("$name")
  done
fi

# Prism is a Go build that touches neither apt nor Maven: let it run beside the others.
declare -A background=()
for name in "${names[@]}"; do
  if [ "$name" = prism ]; then
    bash "$HERE/prism.sh" >"$LOGS/prism.out" 2>"$LOGS/prism.err" &
    background[prism]=$!
  fi
done

declare -A lines=()
failed=()
started_all=$SECONDS
for name in "${names[@]}"; do
  [ "$name" = prism ] && continue
  [ -f "$HERE/$name.sh" ] || { echo "all.sh: no scripts/services/$name.sh" >&2; failed+=("$name"); continue; }
  started=$SECONDS
  if bash "$HERE/$name.sh" >"$LOGS/$name.out" 2>"$LOGS/$name.err"; then
    echo "all.sh: $name ready in $((SECONDS - started)) s" >&2
  else
    echo "all.sh: $name FAILED after $((SECONDS - started)) s:" >&2
    tail -15 "$LOGS/$name.err" | sed 's/^/  /' >&2
    failed+=("$name")
  fi
  lines[$name]=$(grep -E '^[A-Z][A-Z0-9_]*=' "$LOGS/$name.out" || true)
done
for name in "${!background[@]}"; do
  if wait "${background[$name]}"; then
    echo "all.sh: $name ready" >&2
  else
    echo "all.sh: $name FAILED:" >&2
    tail -15 "$LOGS/$name.err" | sed 's/^/  /' >&2
    failed+=("$name")
  fi
  lines[$name]=$(grep -E '^[A-Z][A-Z0-9_]*=' "$LOGS/$name.out" || true)
done

# Merge: lines of services run now replace their old lines; other services' lines stay.
tmp=$(mktemp)
{
  echo "# Written by scripts/services/all.sh; source with: set -a; . ./.services.env; set +a"
  if [ -f "$ENV_FILE" ]; then
    new_keys=$(printf '%s\n' "${lines[@]}" | sed -n 's/=.*//p' | sort -u)
    grep -E '^[A-Z][A-Z0-9_]*=' "$ENV_FILE" | while IFS= read -r line; do
      grep -qxF "${line%%=*}" <<<"$new_keys" || echo "$line"
    done
  fi
  for name in "${names[@]}"; do
    if [ -n "${lines[$name]:-}" ]; then echo "${lines[$name]}"; fi
  done
} > "$tmp"
mv "$tmp" "$ENV_FILE"
grep -E '^[A-Z]' "$ENV_FILE"
echo "all.sh: wrote $ENV_FILE in $((SECONDS - started_all)) s" >&2

if [ ${#failed[@]} -gt 0 ]; then
  echo "all.sh: failed: ${failed[*]} (logs in $LOGS)" >&2
  exit 1
fi

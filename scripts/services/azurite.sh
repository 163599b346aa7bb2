#!/usr/bin/env bash
# Azurite (Azure Storage emulator, npm) serving Blob storage on 127.0.0.1:10000, in memory.
# Idempotent: installs Azurite into ~/.cache/beam-etl/azurite if missing, starts it if down,
# waits, prints the env lines.
#
#   bash scripts/services/azurite.sh
#
# Prints: BEAM_ETL_TEST_AZURE_CONNECTION_STRING='DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;...'
#         BEAM_ETL_TEST_AZURE_ACCOUNT=devstoreaccount1
# The account and key are Azurite's well-known development credentials (public, not secrets).
source "$(dirname "$0")/_lib.sh"

AZURITE_VERSION=${BEAM_ETL_AZURITE_VERSION:-3.35.0}
PORT=${BEAM_ETL_AZURITE_PORT:-10000}
PREFIX=$BEAM_ETL_CACHE/azurite/$AZURITE_VERSION
BIN=$PREFIX/node_modules/.bin/azurite-blob
ACCOUNT=devstoreaccount1
KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

if [ ! -x "$BIN" ]; then
  command -v npm >/dev/null || apt_install nodejs npm
  mkdir -p "$PREFIX"
  log=$(mktemp)
  if ! npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION" >"$log" 2>&1; then
    tail -20 "$log" >&2
    rm -f "$log"
    echo "azurite.sh: npm install azurite@$AZURITE_VERSION failed (output above)" >&2
    exit 1
  fi
  rm -f "$log"
fi

azurite_up() {
  # Any HTTP answer from the blob endpoint (an unauthenticated request gets a 4xx) means it is up.
  local code
  code=$(curl -s -m 3 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/$ACCOUNT?comp=list" 2>/dev/null) || return 1
  [ "$code" != "000" ]
}

if ! azurite_up; then
  stop_daemon azurite  # a stale pid file from a dead server
  # --skipApiVersionCheck: newer azure-storage-blob clients send API versions Azurite has not
  # caught up with yet; --inMemoryPersistence: nothing left on disk between CI runs.
  start_daemon azurite "$RUN_DIR/logs/azurite.log" \
    "$BIN" --blobHost 127.0.0.1 --blobPort "$PORT" --inMemoryPersistence --skipApiVersionCheck --loose --silent
fi
wait_for "Azurite blob service on 127.0.0.1:$PORT" 60 azurite_up
# Single-quoted: the value has ';' and '=' and .services.env is sourced by a shell.
echo "BEAM_ETL_TEST_AZURE_CONNECTION_STRING='DefaultEndpointsProtocol=http;AccountName=$ACCOUNT;AccountKey=$KEY;BlobEndpoint=http://127.0.0.1:$PORT/$ACCOUNT;'"
echo "BEAM_ETL_TEST_AZURE_ACCOUNT=$ACCOUNT"

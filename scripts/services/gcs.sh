#!/usr/bin/env bash
# Google Cloud Storage emulator (gcp-storage-emulator from PyPI, in memory) on 127.0.0.1:9023.
# Idempotent: installs the package if missing, starts the server if down, waits, prints the env line.
#
#   bash scripts/services/gcs.sh
#
# Prints: BEAM_ETL_TEST_GCS_ENDPOINT=http://127.0.0.1:9023
# Point Beam's gs:// filesystem at it with STORAGE_EMULATOR_HOST=<that URL> (or a spec
# `storage: {endpoint_url: ...}` block; see beam_etl/io/cloud.py).
source "$(dirname "$0")/_lib.sh"

PORT=${BEAM_ETL_GCS_PORT:-9023}
URL=http://127.0.0.1:$PORT

"${PYTHON:-python}" -c "import gcp_storage_emulator" 2>/dev/null \
  || "${PYTHON:-python}" -m pip install -q "gcp-storage-emulator>=2024.8.3"

gcs_up() {
  # The emulator answers the JSON API's bucket list for any project.
  curl -fs -m 3 -o /dev/null "$URL/storage/v1/b?project=beam-etl"
}

if ! gcs_up; then
  stop_daemon gcs  # a stale pid file from a dead server
  start_daemon gcs "$RUN_DIR/logs/gcs.log" \
    "${PYTHON:-python}" -m gcp_storage_emulator start --host 127.0.0.1 --port "$PORT" --in-memory
fi
wait_for "gcp-storage-emulator on $URL" 60 gcs_up
echo "BEAM_ETL_TEST_GCS_ENDPOINT=$URL"

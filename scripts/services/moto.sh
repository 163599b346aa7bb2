#!/usr/bin/env bash
# moto in server mode on 127.0.0.1:5000: local S3 and SQS (no real AWS is reachable from CI).
# Idempotent: installs moto[server] if missing, starts if down, waits, prints the URL line.
source "$(dirname "$0")/_lib.sh"
python -c "import moto.server" 2>/dev/null || python -m pip install -q "moto[server]>=5"
PORT=${BEAM_ETL_MOTO_PORT:-5000}
if ! curl -fs "http://127.0.0.1:$PORT/moto-api/" >/dev/null 2>&1; then
  (nohup python -m moto.server -H 127.0.0.1 -p "$PORT" >/tmp/beam-etl-moto.log 2>&1 &)
fi
wait_for "moto" 60 curl -fs "http://127.0.0.1:$PORT/moto-api/"
echo "BEAM_ETL_TEST_MOTO_URL=http://127.0.0.1:$PORT"

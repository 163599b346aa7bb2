#!/usr/bin/env bash
# Prism, Beam's portable local runner, built from the Go module proxy for the installed Beam
# version, so `--runner=PrismRunner` works offline (Beam would otherwise download a release zip
# from GitHub). beam_etl.runners passes the binary as --prism_location.
#
#   bash scripts/services/prism.sh    # build once (~1.5 min cold, Go module cache in ~/go/pkg/mod)
#
# Prints: BEAM_ETL_PRISM_LOCATION=/root/.cache/beam-etl/prism/v<beam version>/prism
source "$(dirname "$0")/_lib.sh"

BEAM_PY_VERSION=$("${PYTHON:-python}" -c 'from importlib.metadata import version; print(version("apache-beam"))' 2>/dev/null || echo 2.77.0)
PRISM_DIR=$BEAM_ETL_CACHE/prism/v$BEAM_PY_VERSION
PRISM=$PRISM_DIR/prism

if [ ! -x "$PRISM" ]; then
  command -v go >/dev/null || { echo "prism.sh: Go is not installed; install Go (golang from Debian is too old for Beam's module: use go >= 1.23)" >&2; exit 1; }
  mkdir -p "$PRISM_DIR"
  log=$(mktemp)
  if ! GOBIN=$PRISM_DIR go install "github.com/apache/beam/sdks/v2/go/cmd/prism@v$BEAM_PY_VERSION" >"$log" 2>&1; then
    grep -v '^go: downloading' "$log" | tail -20 >&2
    rm -f "$log"
    echo "prism.sh: building Prism v$BEAM_PY_VERSION failed (output above)" >&2
    exit 1
  fi
  rm -f "$log"
fi
"$PRISM" --help >/dev/null 2>&1 || { echo "prism.sh: $PRISM does not run; delete it and rerun" >&2; exit 1; }
echo "BEAM_ETL_PRISM_LOCATION=$PRISM"

#!/usr/bin/env bash
# Prism, Beam's portable local runner, built from the Go module proxy for the installed Beam
# version, so `--runner=PrismRunner` works offline (Beam would otherwise download a release zip
# from GitHub). beam_etl.runners passes the binary as --prism_location.
#
# Built with one patch, scripts/services/prism/metrics-short-ids.patch: Prism 2.77 keeps one
# pending value per counter short ID while it asks the SDK for the ID's name, so when two
# bundles of a stage report a new counter at once, one bundle's count is lost and the step's
# summary line no longer balances. The patch keeps every bundle's value; the Go test beside it
# fails on the stock source (7 of 23 counted) and is run on the patched one before building.
#
#   bash scripts/services/prism.sh    # build once (~2 min cold, Go module cache in ~/go/pkg/mod)
#
# Prints: BEAM_ETL_PRISM_LOCATION=/root/.cache/beam-etl/prism/v<beam version>/prism
source "$(dirname "$0")/_lib.sh"

PATCH_DIR=$(cd "$(dirname "$0")/prism" && pwd)
BEAM_PY_VERSION=$("${PYTHON:-python}" -c 'from importlib.metadata import version; print(version("apache-beam"))' 2>/dev/null || echo 2.77.0)
PRISM_DIR=$BEAM_ETL_CACHE/prism/v$BEAM_PY_VERSION
PRISM=$PRISM_DIR/prism
STAMP=$PRISM_DIR/patches.sha256
WANT=$(cat "$PATCH_DIR"/*.patch "$PATCH_DIR"/*_test.go | sha256sum | cut -d' ' -f1)

fail() { grep -v '^go: downloading' "$1" | tail -20 >&2; rm -rf "$2"; echo "prism.sh: $3 (output above)" >&2; exit 1; }

if [ ! -x "$PRISM" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  command -v go >/dev/null || { echo "prism.sh: Go is not installed; install Go (golang from Debian is too old for Beam's module: use go >= 1.23)" >&2; exit 1; }
  mkdir -p "$PRISM_DIR"
  work=$(mktemp -d)
  log=$work/log
  module=github.com/apache/beam/sdks/v2@v$BEAM_PY_VERSION
  (cd "$work" && go mod download -json "$module") >"$work/module.json" 2>"$log" || fail "$log" "$work" "downloading $module failed"
  src=$("${PYTHON:-python}" -c 'import json, sys; print(json.load(open(sys.argv[1]))["Dir"])' "$work/module.json")
  # The module cache is read-only (and go build -overlay refuses files in it): patch a copy.
  cp -r "$src" "$work/sdks" && chmod -R u+w "$work/sdks"
  # git apply works outside a repository too, and git is there wherever this repo was cloned.
  (cd "$work/sdks" && git apply -p1 "$PATCH_DIR/metrics-short-ids.patch") >"$log" 2>&1 || fail "$log" "$work" "the patch does not apply to Beam $BEAM_PY_VERSION's Prism"
  jobservices=go/pkg/beam/runners/prism/internal/jobservices
  cp "$PATCH_DIR/metrics_short_ids_test.go" "$work/sdks/$jobservices/"
  (cd "$work/sdks" && go test -count=1 -run 'TestBeamEtl|Test_metricsStore' "./$jobservices/") >"$log" 2>&1 || fail "$log" "$work" "the patched Prism fails its metrics tests"
  (cd "$work/sdks" && go build -o "$PRISM.new" ./go/cmd/prism) >"$log" 2>&1 || fail "$log" "$work" "building Prism v$BEAM_PY_VERSION failed"
  mv "$PRISM.new" "$PRISM" && echo "$WANT" > "$STAMP"
  rm -rf "$work"
fi
"$PRISM" --help >/dev/null 2>&1 || { echo "prism.sh: $PRISM does not run; delete it and rerun" >&2; exit 1; }
echo "BEAM_ETL_PRISM_LOCATION=$PRISM"

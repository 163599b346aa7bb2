// beam-etl patch test (scripts/services/prism/): counts reported by several bundles while
// Prism looks up their short ID must all be committed.

package jobservices

import (
	"testing"

	fnpb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/fnexecution_v1"
	pipepb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/pipeline_v1"
)

func TestBeamEtlUnknownShortIDKeepsEveryBundlesCount(t *testing.T) {
	ms := metricsStore{}
	// Two bundles finish before the short ID "a" is resolved: 16 and 5 rows.
	for _, rows := range []byte{16, 5} {
		unknown := ms.ContributeFinalMetrics(&fnpb.ProcessBundleResponse{
			MonitoringData: map[string][]byte{"a": {rows}},
		})
		if len(unknown) != 1 || unknown[0] != "a" {
			t.Fatalf("short ID not reported as unknown: %v", unknown)
		}
	}
	ms.AddShortIDs(&fnpb.MonitoringInfosMetadataResponse{
		MonitoringInfo: map[string]*pipepb.MonitoringInfo{"a": makeInfo(pipepb.MonitoringInfoSpecs_USER_SUM_INT64)},
	})
	// A third bundle after the lookup.
	ms.ContributeFinalMetrics(&fnpb.ProcessBundleResponse{MonitoringData: map[string][]byte{"a": {2}}})

	got := ms.Results(committed)
	if len(got) != 1 || len(got[0].GetPayload()) != 1 || got[0].GetPayload()[0] != 23 {
		t.Fatalf("committed sum: got %v, want one counter of 23 (16 + 5 + 2)", got)
	}
}

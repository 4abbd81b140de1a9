package ssejs

import (
	"math"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go"
)

// TestParseBatchOverflow: a message whose first event ID plus its count
// overflows is not one of this package's.
func TestParseBatchOverflow(t *testing.T) {
	for _, c := range []struct {
		first, count uint64
		ok           bool
	}{
		{1, 3, true},
		{math.MaxUint64, 0, true},
		{math.MaxUint64 - 3, 3, true},
		{math.MaxUint64 - 2, 3, false},
		{math.MaxUint64, 1, false},
		{2, math.MaxUint64, false},
	} {
		h := nats.Header{}
		h.Set(hdrEpoch, "e")
		h.Set(hdrFirst, strconv.FormatUint(c.first, 10))
		h.Set(hdrCount, strconv.FormatUint(c.count, 10))
		_, err := parseBatch(1, h, nil)
		if (err == nil) != c.ok {
			t.Errorf("first %d, count %d: %v", c.first, c.count, err)
		}
	}
}

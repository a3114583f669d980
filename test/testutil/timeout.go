package testutil

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TimeoutScaleEnv names the environment variable that stretches the waits of
// tests on slow or loaded machines: PGBATTERY_TEST_TIMEOUT_SCALE=3 triples
// every bound that goes through Timeout. Unset, the factor is 1.
const TimeoutScaleEnv = "PGBATTERY_TEST_TIMEOUT_SCALE"

// maxTimeoutScale keeps a scaled bound far from time.Duration's range.
const maxTimeoutScale = 1000

// TimeoutScale returns the factor TimeoutScaleEnv sets (1 when unset), or
// an error naming the variable when its value is not a number in (0, 1000].
func TimeoutScale() (float64, error) {
	v := strings.TrimSpace(os.Getenv(TimeoutScaleEnv))
	if v == "" {
		return 1, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || !(f > 0 && f <= maxTimeoutScale) {
		return 0, fmt.Errorf("%s=%q: want a number above 0 and at most %d, e.g. 2", TimeoutScaleEnv, v, maxTimeoutScale)
	}
	return f, nil
}

// Timeout returns d stretched by TimeoutScale. A malformed
// TimeoutScaleEnv fails t.
func Timeout(t testing.TB, d time.Duration) time.Duration {
	t.Helper()
	f, err := TimeoutScale()
	if err != nil {
		t.Fatal(err)
	}
	return time.Duration(float64(d) * f)
}

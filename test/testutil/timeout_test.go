package testutil

import (
	"strings"
	"testing"
	"time"
)

func TestTimeoutScale(t *testing.T) {
	for v, want := range map[string]time.Duration{"": 10 * time.Second, "1": 10 * time.Second, " 3 ": 30 * time.Second, "0.5": 5 * time.Second, "2.5": 25 * time.Second} {
		t.Setenv(TimeoutScaleEnv, v)
		if got := Timeout(t, 10*time.Second); got != want {
			t.Errorf("%s=%q: Timeout(10s) = %v, want %v", TimeoutScaleEnv, v, got, want)
		}
	}
	for _, v := range []string{"x", "0", "-1", "NaN", "Inf", "1001", "1e400"} {
		t.Setenv(TimeoutScaleEnv, v)
		if f, err := TimeoutScale(); err == nil || !strings.Contains(err.Error(), TimeoutScaleEnv) {
			t.Errorf("%s=%q: factor %v, error %v; want an error naming the variable", TimeoutScaleEnv, v, f, err)
		}
	}
}

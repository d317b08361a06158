package broker

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// In shared mode a rate-limited function whose claim came back short is
// claimed again when its next token is due, backing off; a rate so low
// that the wait passes 292 years waits "forever" (the regular poll still
// runs), not 10 ms.
func TestTokenRetryInSaturates(t *testing.T) {
	t.Parallel()
	require.Equal(t, 10*time.Millisecond, tokenRetryIn(1000, 0), "at least 10 ms")
	require.Equal(t, 8*time.Second, tokenRetryIn(1, 3), "doubled for each miss")
	require.Equal(t, time.Duration(1e18), tokenRetryIn(1e-9, 0))
	require.Equal(t, time.Duration(math.MaxInt64), tokenRetryIn(1e-10, 0), "a token due after 2262")
	require.Equal(t, time.Duration(math.MaxInt64), tokenRetryIn(1e-300, 8))
	twoYears := 2 * 365 * 24 * time.Hour
	require.Equal(t, time.Duration(math.MaxInt64), tokenRetryIn(1/twoYears.Seconds(), 8), "two years doubled 8 times")
	require.Equal(t, 128*twoYears, tokenRetryIn(1/twoYears.Seconds(), 7))
}

package broker

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// A job waits for at most MaxDependencies jobs. Without a bound, one HTTP
// submit named as many as its 16 MiB body held (some 670,000), and each
// job waiting for 50,000 live jobs took 4 MB of memory that no limit
// counted (--max-queued-bytes counts payloads and uniques).
func TestDependenciesAreBounded(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, lcOpts{})
	var live []uint64
	for range MaxDependencies + 1 {
		live = append(live, tb.submit(t, lcBG("dep", "", "")))
	}
	_, err := tb.trySubmit(t, after("too many", false, live...))
	require.ErrorIs(t, err, ErrDependency)
	require.ErrorContains(t, err, "at most 1024")

	p := after("too many with uniques", false, live[:MaxDependencies]...)
	p.AfterUnique = []UniqueDep{{Function: "dep", Unique: "u"}}
	_, err = tb.trySubmit(t, p)
	require.ErrorContains(t, err, "at most 1024")

	seq := tb.submit(t, after("as many as may be", false, live[:MaxDependencies]...))
	require.Equal(t, "waiting", tb.state(t, seq))
}

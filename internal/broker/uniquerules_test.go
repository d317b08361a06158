package broker

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// A unique follows the Gearman protocol's rules on every front end: at
// most 64 bytes (a store indexes it), and no NUL byte (JOB_ASSIGN_UNIQ ends
// the unique with one: a worker read "a\x00b" as the unique "a" and a
// payload that began with "b").
func TestUniqueFollowsTheGearmanRules(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, lcOpts{can: []string{"fn"}})
	_, err := tb.trySubmit(t, lcBG("fn", strings.Repeat("u", 65), "p"))
	require.ErrorIs(t, err, ErrUniqueTooLong)
	_, err = tb.trySubmit(t, lcBG("fn", "a\x00b", "p"))
	require.ErrorIs(t, err, ErrUniqueNUL)
	require.Zero(t, tb.b.JobCount())

	seq := tb.submit(t, lcBG("fn", strings.Repeat("u", 64), "p"))
	a := tb.grab(t)
	require.Equal(t, seq, a.Seq)
	require.Equal(t, strings.Repeat("u", 64), a.Unique)
}

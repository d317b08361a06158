package broker

import (
	"fmt"
	"log/slog"
	"testing"
)

// BenchmarkIdleWorkerOfManyFunctions measures what one GRAB_JOB and one
// PRE_SLEEP of a worker of n functions, none with jobs, cost under the
// broker's lock: both look through all of its functions, and every other
// request waits meanwhile (what Config.MaxWorkerFunctions bounds).
func BenchmarkIdleWorkerOfManyFunctions(b *testing.B) {
	for _, n := range []int{1024, 10_000, 100_000} {
		b.Run(fmt.Sprint("functions=", n), func(b *testing.B) {
			br := New(Config{Logger: slog.New(slog.DiscardHandler), MaxWorkerFunctions: -1, MaxFunctions: -1})
			if err := br.Start(b.Context()); err != nil {
				b.Fatal(err)
			}
			defer br.Stop()
			s := br.NewSession("127.0.0.1:1", &recorder{})
			for i := range n {
				if err := br.CanDo(s, []byte(fmt.Sprintf("fn-%06d", i)), 0); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for range b.N {
				br.Grab(s)
				br.PreSleep(s)
			}
		})
	}
}

package broker

import (
	"context"
	"strconv"
	"testing"
)

// BenchmarkNewFunctionAtLimit creates a new function per operation while
// the broker knows as many functions as it may, half of them held by
// workers: each one makes the broker forget the function idle longest.
// Its cost should not grow with the limit.
func BenchmarkNewFunctionAtLimit(b *testing.B) {
	for _, limit := range []int{1_000, DefaultMaxFunctions} {
		b.Run(strconv.Itoa(limit), func(b *testing.B) {
			br := New(Config{MaxFunctions: limit})
			if err := br.Start(context.Background()); err != nil {
				b.Fatal(err)
			}
			defer br.Stop()
			var w *Session
			for i := range limit {
				if i%DefaultMaxWorkerFunctions == 0 {
					w = br.NewSession("w", &recorder{})
				}
				if i%2 == 1 {
					if err := br.CreateFunction("idle-" + strconv.Itoa(i)); err != nil {
						b.Fatal(err)
					}
				} else if err := br.CanDo(w, []byte("held-"+strconv.Itoa(i)), 0); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				if err := br.CreateFunction("new-" + strconv.Itoa(i)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

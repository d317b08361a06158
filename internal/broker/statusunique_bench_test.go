package broker

import (
	"fmt"
	"log/slog"
	"testing"
)

// BenchmarkStatusUnique measures one GET_STATUS_UNIQUE, which carries no
// function, while the broker knows n functions, each with one queued job
// with a unique: the lookup holds the broker's lock, and every other
// request waits meanwhile.
func BenchmarkStatusUnique(b *testing.B) {
	for _, n := range []int{1, 100_000} {
		b.Run(fmt.Sprint("functions=", n), func(b *testing.B) {
			br := New(Config{Logger: slog.New(slog.DiscardHandler), MaxFunctions: -1})
			if err := br.Start(b.Context()); err != nil {
				b.Fatal(err)
			}
			defer br.Stop()
			s := br.NewSession("127.0.0.1:1", benchOutbox{})
			uniques := make([][]byte, n)
			for i := range n {
				uniques[i] = []byte(fmt.Sprintf("u-%06d", i))
				p := SubmitParams{Function: []byte(fmt.Sprintf("fn-%06d", i)), Unique: uniques[i],
					Payload: []byte("x"), Priority: Normal, Background: true}
				br.Submit(s, p, func(_ uint64, _ bool, err error) {
					if err != nil {
						b.Fatal(err)
					}
				})
			}
			i := 0
			for b.Loop() {
				if !br.GetStatusUnique(uniques[i]).Known {
					b.Fatal("a queued job's unique is not found")
				}
				if i++; i == n {
					i = 0
				}
			}
		})
	}
}

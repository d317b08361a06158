package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
)

// fillPayload writes the checkable payload of job i into p (at least 8
// bytes): i, big-endian, then pseudo-random bytes seeded by i (splitmix64),
// so that a payload cut short, shifted, mixed with another's or served
// from a reused buffer does not pass checkPayload, and so that the payload
// does not compress: what lands on disk is what a real payload costs.
func fillPayload(p []byte, i uint64) {
	binary.BigEndian.PutUint64(p, i)
	patternFill(p[8:], i)
}

// patternFill fills p with the pseudo-random stream seeded by i.
func patternFill(p []byte, i uint64) {
	x := i
	var w [8]byte
	for len(p) > 0 {
		x += 0x9E3779B97F4A7C15
		z := x
		z = (z ^ z>>30) * 0xBF58476D1CE4E5B9
		z = (z ^ z>>27) * 0x94D049BB133111EB
		binary.LittleEndian.PutUint64(w[:], z^z>>31)
		p = p[copy(p, w[:]):]
	}
}

// checkPayload checks a payload written by fillPayload for a size-byte
// payload and returns its index.
func checkPayload(p []byte, size int) (uint64, error) {
	if len(p) != size {
		return 0, fmt.Errorf("payload of %d bytes, want %d", len(p), size)
	}
	i := binary.BigEndian.Uint64(p)
	want := make([]byte, len(p)-8)
	patternFill(want, i)
	if k := firstDiff(p[8:], want); k >= 0 {
		return i, fmt.Errorf("payload of job %d differs at byte %d", i, k+8)
	}
	return i, nil
}

// firstDiff returns the first index where a and b (of equal length)
// differ, or -1.
func firstDiff(a, b []byte) int {
	for k := range a {
		if a[k] != b[k] {
			return k
		}
	}
	return -1
}

// payloadChecker checks the payloads the workers of verify get, shared by
// them.
type payloadChecker struct {
	size int
	// mu guards seen and err.
	mu   sync.Mutex
	seen map[uint64]struct{}
	err  error
}

func (pc *payloadChecker) check(p []byte) []byte {
	i, err := checkPayload(p, pc.size)
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if err == nil {
		if _, dup := pc.seen[i]; dup {
			err = fmt.Errorf("job %d came back twice", i)
		}
		pc.seen[i] = struct{}{}
	}
	if err != nil && pc.err == nil {
		pc.err = err
	}
	return nil
}

// runVerify completes Jobs jobs of the queue and checks their payloads.
func runVerify(ctx context.Context, r *run) error {
	cfg := r.cfg
	r.res.Workers, r.res.Grabs = cfg.Workers, 8
	pc := &payloadChecker{size: cfg.Payload, seen: make(map[uint64]struct{}, cfg.Jobs)}
	r.prog.start("verify", cfg.Jobs)
	err := r.drainQueue(ctx, drainParams{workers: cfg.Workers, grabs: 8, total: cfg.Jobs, measure: true, partial: true,
		newJobFunc: func(int) func([]byte) []byte { return pc.check }})
	if err != nil {
		return err
	}
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.err != nil {
		return fmt.Errorf("verify: %w (after %d good payloads)", pc.err, len(pc.seen))
	}
	return nil
}

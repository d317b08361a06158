package gearmanapi

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/testwait"
)

// At most maxSlowFrames connections at once have the read timeout of a
// large frame counted again as it keeps arriving; the frame of another
// must arrive within the read timeout, however steadily it comes. Without
// the bound, peers each sending readProgress bytes per read timeout kept
// --max-connections frames of up to --max-packet growing for hours.
func TestSlowFramesAreBounded(t *testing.T) {
	t.Parallel()
	// Each peer sends readProgress bytes every half second, an eighth of
	// the read timeout.
	const timeout, every, chunks = 4 * time.Second, 500 * time.Millisecond, 16
	tb := setupListener(t, Config{ReadTimeout: timeout, IdleRelease: -1}, nil)
	body := bytes.Repeat([]byte("s"), chunks*readProgress)
	pkt := gearman.AppendPacket(nil, gearman.MagicReq, gearman.EchoReq, body)
	first := gearman.HeaderSize + readProgress + 4096 // past the bytes read before the reader counts (conn.small)

	var wg sync.WaitGroup
	defer wg.Wait()
	stop := make(chan struct{})
	defer close(stop)
	// trickle sends the rest of the packet, a readProgress at a time.
	trickle := func(c *client) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for off := first; off < len(pkt); off += readProgress {
				select {
				case <-stop:
					return
				case <-time.After(every):
				}
				if _, err := c.NC.Write(pkt[off:min(off+readProgress, len(pkt))]); err != nil {
					return
				}
			}
		}()
	}

	holders := make([]*client, maxSlowFrames)
	for i := range holders {
		holders[i] = tb.dial(t)
		_, err := holders[i].NC.Write(pkt[:first])
		if err != nil {
			t.Fatal(err)
		}
	}
	testwait.Until(t, "every place for slow frames to be taken", func() bool {
		return tb.srv.slowFrames.Load() == maxSlowFrames
	})
	for _, c := range holders {
		trickle(c)
	}
	late := tb.dial(t)
	if _, err := late.NC.Write(pkt[:first]); err != nil {
		t.Fatal(err)
	}
	trickle(late)
	late.ExpectClosed("") // by the read timeout, as it found no place
	for _, c := range holders {
		c.Expect(gearman.EchoRes, string(body)) // read whole, in twice the read timeout
	}
	testwait.Until(t, "the places of ended frames to be given back", func() bool {
		return tb.srv.slowFrames.Load() == 0
	})
}

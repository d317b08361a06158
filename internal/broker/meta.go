package broker

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/gearwork/gearwork/internal/store"
)

const (
	metaCron   = "cron"
	metaPause  = "pause"
	metaPolicy = "policy" // value: Policy.Format(), or "default" after a reset
)

func metaKey(kind, name string) string { return kind + "/" + name }

// parseMeta splits an entry into its kind, name and numeric value.
func parseMeta(m store.Meta) (kind, name string, value int64, ok bool) {
	kind, name, ok = strings.Cut(m.Key, "/")
	if !ok || (kind != metaCron && kind != metaPause) {
		return "", "", 0, false
	}
	v, err := strconv.ParseInt(string(m.Value), 10, 64)
	if err != nil {
		return "", "", 0, false
	}
	return kind, name, v, true
}

// queueMetaLocked writes an entry through the committer (nil value
// deletes it). Without a store, or a store without Meta, it does nothing.
func (b *Broker) queueMetaLocked(key string, value []byte) {
	if b.life.meta == nil {
		return
	}
	b.life.pendingMeta = append(b.life.pendingMeta, store.Meta{Key: key, Value: value})
	b.mode.metaWrittenLocked(key)
	b.kickCommitter()
}

// hasPendingWrites reports whether anything waits for the committer.
func (b *Broker) hasPendingWrites() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.pendingSaves) > 0 || len(b.pendingRetries) > 0 || len(b.pendingDeletes) > 0 || len(b.barriers) > 0 ||
		len(b.recq.pending) > 0 || len(b.recq.forget) > 0 ||
		len(b.life.pendingMeta) > 0 || len(b.batches.dirty) > 0 || b.mode.pendingLocked()
}

func (b *Broker) takePendingMetaLocked() []store.Meta {
	if len(b.life.pendingMeta) == 0 {
		return nil
	}
	m := b.life.pendingMeta
	b.life.pendingMeta = nil
	return m
}

func (b *Broker) putMeta(ctx context.Context, entries []store.Meta) error {
	if err := b.life.meta.PutMeta(ctx, entries); err != nil {
		return fmt.Errorf("put metadata: %w", err)
	}
	return nil
}

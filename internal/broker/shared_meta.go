package broker

import (
	"context"
	"log/slog"
	"strconv"
	"strings"

	"github.com/gearwork/gearwork/internal/store"
)

// Shared mode keeps three things consistent across the servers sharing a
// store beyond the jobs themselves:
//
//   - pauses and policies: a server that writes a "pause/" or "policy/"
//     metadata entry notifies the others, which read it back and apply it
//     (syncMeta), so a pause stops every server from handing out jobs;
//   - ordered queues and concurrency limits are enforced by the store's
//     claim; this file tells the other servers when an ordering key or a
//     concurrency slot is freed (notifyLocked), and sends a due retry of a
//     limited function back to the store so that it takes a slot
//     (releaseLocked).

// sharedMeta is the shared-mode metadata state. Guarded by Broker.mu.
type sharedMeta struct {
	// dirty are keys other servers (or this one) changed, to read back;
	// all asks to read every key.
	dirty map[string]bool
	all   bool
	// gen counts this server's own metadata writes; local counts, per
	// key, those queued but not yet committed. A key with writes of its
	// own pending is not read back (the server's own value wins until
	// committed; its notification then brings the key back).
	gen   uint64
	local map[string]int
	// notify are functions to wake the other servers for in the next
	// commit round; release are jobs to give back in it.
	notify  map[string]bool
	release []uint64
}

// metaWrittenLocked notes a metadata write of this server's own.
func (c *sharedMode) metaWrittenLocked(key string) {
	c.meta.gen++
	if c.meta.local == nil {
		c.meta.local = make(map[string]int)
	}
	c.meta.local[key]++
}

// metaCommittedLocked notes that the entries were written.
func (c *sharedMode) metaCommittedLocked(entries []store.Meta) {
	for _, m := range entries {
		if c.meta.local[m.Key]--; c.meta.local[m.Key] <= 0 {
			delete(c.meta.local, m.Key)
		}
	}
}

// metaChanged is the store's notification that key changed ("" for any
// key). It runs on the store's listener goroutine.
func (c *sharedMode) metaChanged(key string) {
	b := c.b
	if strings.HasPrefix(key, cancelPrefix) {
		c.cancelSignalled(key)
		return
	}
	if key != "" && !sharedMetaKey(key) {
		return
	}
	b.mu.Lock()
	if key == "" {
		c.meta.all = true
	} else {
		if c.meta.dirty == nil {
			c.meta.dirty = make(map[string]bool)
		}
		c.meta.dirty[key] = true
	}
	b.mu.Unlock()
	c.kick()
}

// sharedMetaKey reports whether a metadata key is applied at run time
// across the servers (pauses and policies; cron ticks are read when a
// tick fires).
func sharedMetaKey(key string) bool {
	return strings.HasPrefix(key, metaPause+"/") || strings.HasPrefix(key, metaPolicy+"/")
}

// syncMeta reads back the metadata keys other servers changed and applies
// them. It runs on the claim loop, so reads and applications happen in
// notification order.
func (c *sharedMode) syncMeta(ctx context.Context) {
	b := c.b
	b.mu.Lock()
	all, dirty, gen := c.meta.all, c.meta.dirty, c.meta.gen
	c.meta.all, c.meta.dirty = false, nil
	b.mu.Unlock()
	if !all && len(dirty) == 0 {
		return
	}
	values := make(map[string][]byte) // nil: the key is not stored
	var err error
	if all {
		err = c.store.LoadMeta(ctx, func(m store.Meta) error {
			if sharedMetaKey(m.Key) {
				values[m.Key] = m.Value
			}
			return nil
		})
	} else {
		for key := range dirty {
			var v []byte
			var ok bool
			if v, ok, err = c.store.GetMeta(ctx, key); err != nil {
				break
			}
			if !ok {
				v = nil
			}
			values[key] = v
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err != nil || c.meta.gen != gen {
		// Read again later: the store failed, or this server wrote
		// metadata meanwhile and the values read may predate it.
		if err != nil && ctx.Err() == nil {
			b.log.Warn("broker: reading metadata changed by other servers failed", slog.String("error", err.Error()))
		}
		c.meta.all = c.meta.all || all
		for key := range dirty {
			if c.meta.dirty == nil {
				c.meta.dirty = make(map[string]bool)
			}
			c.meta.dirty[key] = true
		}
		if err == nil {
			c.kick()
		}
		return
	}
	if all {
		// Pauses that are no longer stored have ended.
		for _, f := range b.functions {
			if f.life != nil && f.life.paused {
				if _, ok := values[metaKey(metaPause, f.name)]; !ok {
					values[metaKey(metaPause, f.name)] = nil
				}
			}
		}
	}
	for key, v := range values {
		if c.meta.local[key] > 0 {
			continue
		}
		c.applySharedMetaLocked(key, v)
	}
}

// applySharedMetaLocked applies the stored value v of key (nil: not
// stored) that another server wrote, without storing it again.
func (c *sharedMode) applySharedMetaLocked(key string, v []byte) {
	b := c.b
	kind, name, _ := strings.Cut(key, "/")
	switch kind {
	case metaPause:
		f := b.functions[name]
		if v == nil {
			if f != nil && f.life != nil && f.life.paused {
				b.resumeLocked(f, false)
			}
			return
		}
		until, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			b.log.Warn("broker: ignoring a stored pause", slog.String("function", name), slog.String("value", string(v)))
			return
		}
		if f != nil && f.life != nil && f.life.paused && f.life.pausedUntil == until {
			return
		}
		if until != 0 && until <= b.nowNanos() {
			return // ended already; its timer resumed it here or will not need to
		}
		b.pauseLocked(b.function(name), until, false)
	case metaPolicy:
		if v == nil {
			return
		}
		if p, ok := b.life.policies[name]; ok && p.Format() == string(v) {
			return
		}
		if string(v) == policyReset && b.isResetLocked(name) {
			return
		}
		b.applyStoredPolicyLocked(name, string(v))
		b.log.Info("broker: applied a policy changed on another server", slog.String("function", name))
	}
}

// notifyLocked asks the next commit round to wake the other servers for
// f: an ordering key or a concurrency slot of f is freed once the round
// is written.
func (c *sharedMode) notifyLocked(f *function) {
	b := c.b
	if c.meta.notify == nil {
		c.meta.notify = make(map[string]bool)
	}
	c.meta.notify[f.name] = true
	b.kickCommitter()
}

// releaseLocked gives a job held here back to the store in the next
// commit round (after its state is written), for any server to claim.
func (c *sharedMode) releaseLocked(j *job) {
	c.meta.release = append(c.meta.release, j.seq)
	c.notifyLocked(j.fn)
	c.forgetLocked(j)
}

// takeNotifyLocked returns what the next commit round must release and
// notify.
func (c *sharedMode) takeNotifyLocked() (release []uint64, notify []string) {
	release = c.meta.release
	c.meta.release = nil
	for f := range c.meta.notify {
		notify = append(notify, f)
	}
	c.meta.notify = nil
	return release, notify
}

// sharedLimits reports whether f has a concurrency or rate limit, which
// the store enforces across the servers when claiming.
func sharedLimits(f *function) bool {
	return f.life != nil && (f.life.pol.Concurrency > 0 || f.life.pol.Rate > 0)
}

package pebble

import (
	"context"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"github.com/gearwork/gearwork/internal/store"
)

var _ store.Writer = (*Store)(nil)

// Write applies w in one Pebble batch, so that a crash leaves all of it or
// none: saves, metadata, job deletes, then the records forgotten and
// written (as EndJobs). It is synced as Save is when it saves jobs or
// metadata.
func (s *Store) Write(ctx context.Context, w store.Write) error {
	var first func(*pebbledb.Batch) error
	if len(w.Save) > 0 || len(w.Meta) > 0 {
		first = func(b *pebbledb.Batch) error {
			if err := fillSave(b, w.Save); err != nil {
				return err
			}
			return fillMeta(b, w.Meta)
		}
	}
	return s.endJobs(ctx, w.Delete, w.Records, w.ForgetRecords, first)
}

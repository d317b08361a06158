package client

// BatchUnique returns the unique id that adds a background job to the
// batch with id batch on a Gearwork server (docs/batches.md): "batch:ID",
// or "batch:ID:UNIQUE" when the job has a unique of its own (the worker
// is handed UNIQUE). Create and close batches with the admin commands
// "batch create" and "batch close", or over HTTP. A foreground submit, an
// unknown batch or one that has completed is refused with an error.
//
// With several servers, submit a batch's jobs to the server that created
// it: a Request with this unique is sent to the server its unique picks,
// which is the same for every job of a batch only without a UNIQUE.
func BatchUnique(batch, unique string) string {
	if unique == "" {
		return "batch:" + batch
	}
	return "batch:" + batch + ":" + unique
}

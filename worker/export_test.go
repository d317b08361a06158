package worker

// Draining reports whether Shutdown or Stop has begun; tests use it to
// know the worker stopped grabbing.
func Draining(w *Worker) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.draining
}

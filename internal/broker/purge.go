package broker

// PurgeDeadLetter deletes one dead letter. It returns ErrJobNotFound when
// the handle names no dead letter.
func (b *Broker) PurgeDeadLetter(handle []byte) error {
	seq, ok := b.ParseHandle(handle)
	if !ok {
		return ErrJobNotFound
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	j := b.life.dead[seq]
	if j == nil {
		return ErrJobNotFound
	}
	b.removeDeadLocked(j)
	b.deleteStoredLocked(j)
	return nil
}

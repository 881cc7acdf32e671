package cluster

// Crash ends m as a killed process would: heartbeats stop, and its liveness lock goes, its
// row stays.
func (m *Membership) Crash() {
	m.mu.Lock()
	beats := m.beats
	m.mu.Unlock()
	if beats != nil {
		beats.Stop()
	}
	if m.live != nil {
		m.live.stop()
	}
}

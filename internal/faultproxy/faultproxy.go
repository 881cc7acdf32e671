// Package faultproxy is a TCP proxy that injects network faults between a process and a
// server (its database): drop, delay, blackhole. `twice check` puts one in front of
// PostgreSQL per instance, and so does `twice run --chaos`.
package faultproxy

import (
	"net"
	"sync"
	"time"
)

// Mode is what a [Proxy] does to the traffic between an instance and its database.
type Mode int

const (
	// Pass forwards everything.
	Pass Mode = iota
	// Drop closes every open connection and refuses new ones, as when the database host
	// goes away and the kernel answers with resets.
	Drop
	// Blackhole keeps connections open but forwards nothing, as in a network partition:
	// requests hang until the partition heals, then flow again.
	Blackhole
	// Delay forwards everything, each chunk late by the proxy's delay.
	Delay
)

func (m Mode) String() string {
	return [...]string{"pass", "drop", "blackhole", "delay"}[m]
}

// Proxy is a TCP proxy in front of the database whose behaviour a test or the checker
// switches at will. One proxy stands for one instance's network path.
type Proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex // protects mode, delay, conns, gate, closed
	mode   Mode
	delay  time.Duration
	conns  map[net.Conn]struct{}
	gate   chan struct{} // closed while traffic may flow; replaced when a blackhole starts
	closed bool
	wg     sync.WaitGroup
}

// New listens on a free local port and forwards to target (host:port).
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	gate := make(chan struct{})
	close(gate)
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}, gate: gate}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's listening address (host:port).
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Set switches the mode; delay applies to [Delay].
func (p *Proxy) Set(m Mode, delay time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	prev := p.mode
	p.mode, p.delay = m, delay
	switch {
	case m == Blackhole && prev != Blackhole:
		p.gate = make(chan struct{})
	case m != Blackhole && prev == Blackhole:
		close(p.gate)
	}
	if m == Drop {
		for c := range p.conns {
			c.Close()
		}
	}
}

// Mode returns the current mode.
func (p *Proxy) Mode() Mode {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.closed || p.mode == Drop {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.mu.Unlock()
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	server, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		client.Close()
		return
	}
	if !p.track(client, server) {
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() { p.pipe(server, client) })
	wg.Go(func() { p.pipe(client, server) })
	wg.Wait()
	p.untrack(client, server)
}

func (p *Proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.mode == Drop {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *Proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
		c.Close()
	}
}

// pipe copies src to dst chunk by chunk, holding each chunk at the gate while blackholed
// and for the delay while delayed. Closing one side closes the other.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			gate, mode, delay := p.gate, p.mode, p.delay
			p.mu.Unlock()
			<-gate
			if mode == Delay && delay > 0 {
				time.Sleep(delay)
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // EOF or a closed connection: the deferred closes end the other side
		}
	}
}

// Close stops the proxy and closes every connection through it.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	if p.mode == Blackhole {
		close(p.gate)
	}
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

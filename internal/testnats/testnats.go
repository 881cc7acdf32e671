// Package testnats gives tests the NATS server named by TWICE_TEST_NATS_URL, and a TCP proxy
// in front of it that a test can cut to make a client lose its connection.
package testnats

import (
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"net/url"
	"os"
	"sync"
	"testing"
)

// EnvNATS names the NATS server (with JetStream) the NATS suites run against.
const EnvNATS = "TWICE_TEST_NATS_URL"

// URL returns TWICE_TEST_NATS_URL or skips t.
func URL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(EnvNATS)
	if u == "" {
		t.Skip(EnvNATS + " not set: skipping the NATS suite")
	}
	return u
}

// Service returns a service name no other test uses. Every test shares the one NATS
// server, whose subjects are named by service alone (twice.bus.<service>.<channel>), not
// by database or schema: two tests of one service name hear each other's messages. Most
// only cost a re-read, being hints; a test that asserts on what arrives on the bus, or
// runs real instances that do, must name its service with Service.
func Service() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "svc-" + hex.EncodeToString(b)
}

// Proxy forwards TCP connections to the NATS server until [Proxy.Cut] drops them; clients
// reconnect through it.
type Proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex // protects conns
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// NewProxy starts a proxy to the server of URL(t), stopped when t ends.
func NewProxy(t testing.TB) *Proxy {
	t.Helper()
	u, err := url.Parse(URL(t))
	if err != nil {
		t.Fatalf("testnats: %s: %v", EnvNATS, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: u.Host, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// URL is the proxy's address as a NATS URL.
func (p *Proxy) URL() string { return "nats://" + p.ln.Addr().String() }

// Cut drops every connection through the proxy; new ones are accepted.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[s] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, s)
		go p.pipe(s, c)
	}
}

func (p *Proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

func (p *Proxy) close() {
	p.ln.Close()
	p.Cut()
	p.wg.Wait()
}

package faultproxy

import (
	"bufio"
	"net"
	"testing"
	"time"
)

// echo starts a server that writes back every line it reads.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					c.Write([]byte(line))
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(c net.Conn, r *bufio.Reader) error {
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	_, err := r.ReadString('\n')
	return err
}

func TestModes(t *testing.T) {
	p, err := New(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if err := roundTrip(c, r); err != nil {
		t.Fatalf("pass: %v", err)
	}

	p.Set(Blackhole, 0)
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if err := roundTrip(c, r); err == nil {
		t.Fatal("blackhole: a reply came through")
	}
	c.SetReadDeadline(time.Time{})
	p.Set(Pass, 0)
	if _, err := r.ReadString('\n'); err != nil { // the held line flows once it heals
		t.Fatalf("healed: %v", err)
	}

	p.Set(Drop, 0)
	if err := roundTrip(c, r); err == nil {
		t.Fatal("drop: the open connection still answers")
	}
	if p.Mode() != Drop {
		t.Fatalf("mode %v, want drop", p.Mode())
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// payments stands in for a payment provider: an HTTP API served in this process. Every
// request carries an Idempotency-Key header; a key seen before gets the first answer
// again, without a second effect, as real providers do. That is what makes the charge step
// safe to retry: its key (the workflow id and step name) is the same on every attempt.
type payments struct {
	seq *atomic.Int64 // the journal's count of effects, shared with the stock moves

	mu       sync.Mutex        // protects the fields below
	answers  map[string][]byte // by endpoint and idempotency key: the answer given
	charges  map[string]*charge
	loseOnce map[string]bool // orders whose first charge's answer is lost on the way back
	journal  []entry
}

type charge struct {
	ID       string `json:"id"`
	Order    string `json:"order"`
	Cents    int64  `json:"cents"`
	Refunded bool   `json:"refunded"`
}

// entry is one effect of the provider, numbered from the journal's count.
type entry struct {
	seq   int64
	order string
	what  string
}

func newPayments(seq *atomic.Int64) *payments {
	return &payments{seq: seq, answers: map[string][]byte{}, charges: map[string]*charge{}, loseOnce: map[string]bool{}}
}

func (p *payments) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /charges", p.idempotent(p.charge))
	mux.HandleFunc("POST /refunds", p.idempotent(p.refund))
	return mux
}

// idempotent runs do once per endpoint and Idempotency-Key, and answers every request
// with that key with its answer. do runs under p.mu. A lost answer (loseOnce) is
// recorded first: the effect happened, the client does not know it.
func (p *payments) idempotent(do func(body []byte) (any, bool, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Idempotency-Key")
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<16))
		if key == "" || err != nil {
			http.Error(w, "an Idempotency-Key header and a body are required", http.StatusBadRequest)
			return
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		k := r.URL.Path + " " + key
		if a, ok := p.answers[k]; ok {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(a)
			return
		}
		v, lose, err := do(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnprocessableEntity)
			return
		}
		a, _ := json.Marshal(v)
		p.answers[k] = a
		if lose {
			http.Error(w, "upstream connection reset", http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(a)
	}
}

func (p *payments) charge(body []byte) (any, bool, error) {
	var req struct {
		Order string `json:"order"`
		Cents int64  `json:"cents"`
	}
	if err := json.Unmarshal(body, &req); err != nil || req.Order == "" || req.Cents <= 0 {
		return nil, false, errors.New("an order and a positive amount are required")
	}
	c := &charge{ID: fmt.Sprintf("ch_%d", len(p.charges)+1), Order: req.Order, Cents: req.Cents}
	p.charges[c.ID] = c
	p.record(c.Order, fmt.Sprintf("charge %s: %d cents", c.ID, c.Cents))
	lose := p.loseOnce[c.Order]
	delete(p.loseOnce, c.Order)
	return c, lose, nil
}

func (p *payments) refund(body []byte) (any, bool, error) {
	var req struct {
		Charge string `json:"charge"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, false, err
	}
	c := p.charges[req.Charge]
	if c == nil {
		return nil, false, fmt.Errorf("no charge %q", req.Charge)
	}
	if !c.Refunded {
		c.Refunded = true
		p.record(c.Order, "refund "+c.ID)
	}
	return c, false, nil
}

func (p *payments) record(order, what string) {
	p.journal = append(p.journal, entry{seq: p.seq.Add(1), order: order, what: what})
}

// made counts the charges made and refunded.
func (p *payments) made() (charges, refunds int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.charges {
		charges++
		if c.Refunded {
			refunds++
		}
	}
	return charges, refunds
}

// entries returns the provider's effects for order.
func (p *payments) entries(order string) []entry {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []entry
	for _, e := range p.journal {
		if e.order == order {
			out = append(out, e)
		}
	}
	return out
}

// serve serves the provider's API on a loopback port until stop is called, and returns its
// client.
func (p *payments) serve() (c *payClient, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	srv := &http.Server{Handler: p.routes(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	c = &payClient{base: "http://" + ln.Addr().String(), http: &http.Client{Timeout: 10 * time.Second}}
	return c, func() { _ = srv.Close() }, nil
}

// payClient calls the provider, as the saga's steps would call a real one.
type payClient struct {
	base string
	http *http.Client
}

// Charge charges order, once per key.
func (c *payClient) Charge(ctx context.Context, key, order string, cents int64) (string, error) {
	var ch charge
	err := c.post(ctx, "/charges", key, map[string]any{"order": order, "cents": cents}, &ch)
	return ch.ID, err
}

// Refund refunds the charge id, once per key.
func (c *payClient) Refund(ctx context.Context, key, id string) error {
	return c.post(ctx, "/refunds", key, map[string]any{"charge": id}, nil)
}

func (c *payClient) post(ctx context.Context, path, key string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Idempotency-Key", key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("payments: POST %s: %s: %s", path, resp.Status, bytes.TrimSpace(answer))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(answer, out)
}

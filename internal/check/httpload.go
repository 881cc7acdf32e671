package check

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/store"
)

// sessionKeys is how many session keys the client writes in parallel, each from its own
// goroutine, so that requests of one session changing different keys run concurrently on
// different instances.
const sessionKeys = 4

// httpLoad is the checker's HTTP client. It spreads every request over the instances at
// random and retries a failed one on another, through kills, pauses and cut connections.
type httpLoad struct {
	g      *instance.Group
	client *http.Client
	rec    *recorder

	mu      sync.Mutex // protects the fields below
	pos     int
	addrs   map[int]string // slot → where it serves now
	cookie  string
	acked   map[string]int64 // session key → highest value an instance confirmed
	tried   map[string]int64 // session key → highest value sent
	paid    map[string]bool  // idempotency keys answered 2xx
	pending string           // the idempotency key in flight when the load stopped
	reqs    int

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newHTTPLoad(g *instance.Group, rec *recorder) *httpLoad {
	return &httpLoad{g: g, client: &http.Client{Timeout: 2 * time.Second}, rec: rec, addrs: map[int]string{},
		acked: map[string]int64{}, tried: map[string]int64{}, paid: map[string]bool{}}
}

// start runs the client until stop.
func (h *httpLoad) start(ctx context.Context) {
	ctx, h.cancel = context.WithCancel(ctx)
	h.wg.Go(func() {
		if !h.login(ctx) {
			return
		}
		var wg sync.WaitGroup
		for k := range sessionKeys {
			wg.Go(func() { h.writeKey(ctx, "k"+strconv.Itoa(k)) })
		}
		wg.Go(func() { h.pay(ctx) })
		wg.Wait()
	})
}

func (h *httpLoad) stop() {
	if h.cancel != nil {
		h.cancel()
	}
	h.wg.Wait()
}

// addr picks a random instance that serves HTTP now.
func (h *httpLoad) addr() string {
	all := h.all()
	if len(all) == 0 {
		return ""
	}
	return all[rand.IntN(len(all))]
}

// all lists the addresses of the instances that serve HTTP now.
func (h *httpLoad) all() []string {
	// The snapshot is taken under the lock: another goroutine may have moved pos past a
	// snapshot taken before it.
	h.mu.Lock()
	defer h.mu.Unlock()
	events, end := h.g.Since(h.pos)
	for _, e := range events {
		switch e.Event {
		case "http":
			h.addrs[e.Proc] = e.Addr
		case "exited":
			delete(h.addrs, e.Proc)
		}
	}
	h.pos = end
	var all []string
	for _, a := range h.addrs {
		all = append(all, a)
	}
	return all
}

// converge judges the settings and the coherent cache: once the writers have stopped, every
// instance serves the last value written (the cached row, which each write changed in the
// setting's transaction) within convergeLimit.
func (h *httpLoad) converge(ctx context.Context, s *store.Store, service string) (Invariant, error) {
	truth := func(ctx context.Context) (want, writes int64, err error) {
		err = s.Reader().QueryRow(ctx, "SELECT value, writes FROM "+instance.CheckCachedTable+" WHERE service = $1", service).Scan(&want, &writes)
		return want, writes, err
	}
	return judgeConverge(ctx, h.all(), truth, h.view, convergeLimit)
}

// judgeConverge asks each instance (at addrs) for its view until it serves the truth, or
// limit has passed since it began.
func judgeConverge(ctx context.Context, addrs []string, truth func(context.Context) (want, writes int64, err error),
	view func(context.Context, string) (instance.Converged, error), limit time.Duration) (Invariant, error) {
	inv := Invariant{Name: invConverge}
	if len(addrs) == 0 {
		inv.violate(time.Time{}, "no instance serves HTTP")
		return inv, nil
	}
	deadline := time.Now().Add(limit)
	for _, a := range addrs {
		for {
			// The truth is read again each time: a write may commit just after the quiesce.
			want, writes, err := truth(ctx)
			if err != nil {
				return inv, err
			}
			inv.Operations = int(writes)
			got, err := view(ctx, a)
			if err == nil && got.Setting == want && got.Cache == want {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				inv.violate(time.Time{}, "instance at %s after %v: setting %d, cache %d, last value %d (err %v)",
					a, limit, got.Setting, got.Cache, want, err)
				break
			}
			sleep(ctx, 20*time.Millisecond)
		}
	}
	return inv, nil
}

// convergeLimit bounds how long after the writers stop every instance may take to serve
// the last value: far above the bus's milliseconds, and above the settings' poll.
const convergeLimit = 10 * time.Second

// view asks the instance at addr for its view of the setting and the cached row.
func (h *httpLoad) view(ctx context.Context, addr string) (instance.Converged, error) {
	var v instance.Converged
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/converge", nil)
	if err != nil {
		return v, err
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return v, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return v, fmt.Errorf("status %d", resp.StatusCode)
	}
	return v, json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&v)
}

// do sends one request to a random instance and returns the status and body, or an error.
func (h *httpLoad) do(ctx context.Context, method, path string, header http.Header) (int, string, error) {
	a := h.addr()
	if a == "" {
		return 0, "", fmt.Errorf("no instance serves HTTP")
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+a+path, strings.NewReader("{}"))
	if err != nil {
		return 0, "", err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	h.mu.Lock()
	h.reqs++
	if h.cookie != "" {
		req.Header.Set("Cookie", h.cookie)
	}
	h.mu.Unlock()
	start := time.Now()
	resp, err := h.client.Do(req)
	if err != nil {
		h.record(path, start, true)
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	h.record(path, start, resp.StatusCode >= 300)
	if c := resp.Header.Get("Set-Cookie"); c != "" && method == http.MethodPost && path == "/login" {
		h.mu.Lock()
		h.cookie, _, _ = strings.Cut(c, ";")
		h.mu.Unlock()
	}
	return resp.StatusCode, string(body), nil
}

// record counts the request to path that began at start for the report: /pay under
// idempotency, the rest under sessions.
func (h *httpLoad) record(path string, start time.Time, failed bool) {
	block := BlockSessions
	if path == "/pay" {
		block = BlockIdempotency
	}
	h.rec.add(sample{block: block, at: start, latency: time.Since(start), failed: failed})
}

// retry waits a moment before the next attempt, and reports whether to go on.
func retry(ctx context.Context) bool {
	sleep(ctx, 50*time.Millisecond)
	return ctx.Err() == nil
}

func (h *httpLoad) login(ctx context.Context) bool {
	for {
		if code, _, err := h.do(ctx, http.MethodPost, "/login", nil); err == nil && code == http.StatusOK {
			return true
		}
		if !retry(ctx) {
			return false
		}
	}
}

// writeKey sets key to 1, 2, 3, … one request at a time, each until an instance confirms it.
func (h *httpLoad) writeKey(ctx context.Context, key string) {
	for v := int64(1); ctx.Err() == nil; v++ {
		h.mu.Lock()
		h.tried[key] = v
		h.mu.Unlock()
		for {
			code, _, err := h.do(ctx, http.MethodPost, "/put?k="+key+"&v="+strconv.FormatInt(v, 10), nil)
			if err == nil && code == http.StatusOK {
				h.mu.Lock()
				h.acked[key] = v
				h.mu.Unlock()
				break
			}
			if !retry(ctx) {
				return
			}
		}
		sleep(ctx, 20*time.Millisecond)
	}
}

// pay sends one POST per idempotency key, retried (on any instance) until it is answered
// 2xx: the first answer or a replay of it.
func (h *httpLoad) pay(ctx context.Context) {
	hdr := http.Header{"Authorization": {instance.CheckAuth}, "Content-Type": {"application/json"}}
	for i := 0; ctx.Err() == nil; i++ {
		key := "pay-" + strconv.Itoa(i)
		h.mu.Lock()
		h.pending = key
		h.mu.Unlock()
		hdr.Set("Idempotency-Key", `"`+key+`"`)
		for {
			code, _, err := h.do(ctx, http.MethodPost, "/pay", hdr)
			if err == nil && code >= 200 && code < 300 {
				h.mu.Lock()
				h.paid[key] = true
				h.pending = ""
				h.mu.Unlock()
				break
			}
			if !retry(ctx) {
				return
			}
		}
		sleep(ctx, 20*time.Millisecond)
	}
}

// verify reads every session key back through the instances and the effects of /pay from
// the database, and judges them.
func (h *httpLoad) verify(ctx context.Context, s *store.Store, service string) (sessions, idem Invariant, err error) {
	sessions = Invariant{Name: invSessions}
	idem = Invariant{Name: invIdempotency}
	h.mu.Lock()
	acked, tried, paid, pending := h.acked, h.tried, h.paid, h.pending
	reqs := h.reqs
	h.mu.Unlock()
	values := map[string]int64{}
	for k := range sessionKeys {
		key := "k" + strconv.Itoa(k)
		var got int64
		var lastErr error
		deadline := time.Now().Add(30 * time.Second)
		for {
			code, body, err := h.do(ctx, http.MethodGet, "/get?k="+key, nil)
			if err == nil && code == http.StatusOK {
				got, err = strconv.ParseInt(strings.TrimSpace(body), 10, 64)
				if err == nil {
					break
				}
			}
			lastErr = fmt.Errorf("status %d: %v", code, err)
			if time.Now().After(deadline) {
				return sessions, idem, fmt.Errorf("check: reading session key %s back: %w", key, lastErr)
			}
			sleep(ctx, 100*time.Millisecond)
		}
		values[key] = got
	}
	sessions = judgeSessions(values, acked, tried, reqs)

	counts := map[string]int{}
	rows, err := s.Reader().Query(ctx, "SELECT idem_key, count(*) FROM "+instance.CheckPayTable+" WHERE service = $1 GROUP BY idem_key", service)
	if err != nil {
		return sessions, idem, err
	}
	for rows.Next() {
		var k string
		var n int
		if err := rows.Scan(&k, &n); err != nil {
			rows.Close()
			return sessions, idem, err
		}
		counts[k] = n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return sessions, idem, err
	}
	return sessions, judgeIdempotency(paid, pending, counts), nil
}

// judgeSessions compares each session key's value read back (got) with the last value an
// instance confirmed and the last one sent.
func judgeSessions(got, acked, tried map[string]int64, reqs int) Invariant {
	inv := Invariant{Name: invSessions, Operations: reqs}
	for key, v := range got {
		// The value is the last confirmed write, or a later one that was sent but whose
		// answer was lost; anything older means a confirmed update was lost.
		if v < acked[key] || v > tried[key] {
			inv.violate(time.Time{}, "key %s holds %d; confirmed %d, sent up to %d", key, v, acked[key], tried[key])
		}
	}
	return inv
}

// judgeIdempotency compares the effects recorded per idempotency key (counts) with the keys
// answered 2xx (paid); pending is the key in flight when the load stopped, which may have
// taken effect once without an answer.
func judgeIdempotency(paid map[string]bool, pending string, counts map[string]int) Invariant {
	inv := Invariant{Name: invIdempotency, Operations: len(paid)}
	for k := range paid {
		if counts[k] != 1 {
			inv.violate(time.Time{}, "key %s answered 2xx but has %d effects", k, counts[k])
		}
	}
	for k, n := range counts {
		if !paid[k] && (k != pending || n > 1) {
			inv.violate(time.Time{}, "key %s has %d effects but was never sent to completion", k, n)
		}
	}
	return inv
}

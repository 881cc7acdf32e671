package deploy_test

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
	"github.com/twicehq/twice/store"
)

// The health checks run faster in the test than haproxy.cfg's defaults (1s, 250ms), so
// that a draining instance is out within about 1.4 s (1 s of results shared by the
// instance's probes, a check period and two fast ones); the instances keep serving for
// shutdownDelay after SIGTERM, far more than that.
const (
	checkInter    = "200ms"
	checkFast     = "100ms"
	shutdownDelay = "4s"
)

// TestHAProxy runs haproxy.cfg, unchanged, in front of three real instances of the example
// app (child processes) on a fresh PostgreSQL schema (SQLite without
// TWICE_TEST_POSTGRES_URL), under a steady loop of requests: a SIGKILLed instance is taken
// out and gets no more traffic, and a rolling restart (SIGTERM, wait for the new process to
// be UP in HAProxy, next) fails no request.
func TestHAProxy(t *testing.T) {
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("haproxy is not installed, and CI must run this test: .ci/run installs it with apt-get")
		}
		t.Skip("haproxy is not installed (apt-get install haproxy): skipping the HAProxy example's test")
	}
	c := startCluster(t, haproxy)
	c.waitStatus(t, "UP", 1, 2, 3)

	l := c.startLoad(t)
	defer l.stop()
	testnode.Eventually(t, 30*time.Second, "every instance serves through HAProxy", func() bool {
		return l.servedBy("1") > 0 && l.servedBy("2") > 0 && l.servedBy("3") > 0
	})

	t.Run("kill", func(t *testing.T) {
		killed := c.instances[1]
		sessionsBefore := c.sessions(t, killed.slot)
		l.reset()
		start := time.Now()
		killed.signal(t, syscall.SIGKILL)
		killed.waitExit(t)
		c.waitStatus(t, "DOWN", killed.slot)
		t.Logf("SIGKILL to DOWN in HAProxy: %v (checks every %s, then %s; fall 3); %d requests failed meanwhile, %d sessions to it",
			time.Since(start).Round(time.Millisecond), checkInter, checkFast, l.failures.Load(), c.sessions(t, killed.slot)-sessionsBefore)

		// From DOWN on, every request succeeds and none goes to the killed instance.
		l.reset()
		downSessions := c.sessions(t, killed.slot)
		testnode.Eventually(t, 60*time.Second, "300 more requests served", func() bool { return l.ok.Load() >= 300 })
		if n := l.failures.Load(); n != 0 {
			t.Errorf("%d requests failed after HAProxy took the killed instance out: %s", n, l.lastError())
		}
		if n := l.servedBy(strconv.Itoa(killed.slot)); n != 0 {
			t.Errorf("the killed instance answered %d requests", n)
		}
		if n := c.sessions(t, killed.slot); n != downSessions {
			t.Errorf("HAProxy sent %d sessions to the instance it marked DOWN", n-downSessions)
		}

		killed.start(t)
		c.waitStatus(t, "UP", killed.slot)
	})

	t.Run("rolling restart", func(t *testing.T) {
		l.reset()
		for _, in := range c.instances {
			start := time.Now()
			var downAt atomic.Int64 // when HAProxy first showed the instance DOWN, ns since start
			stopWatch := c.watchDown(t, in.slot, start, &downAt)
			in.signal(t, syscall.SIGTERM)
			in.waitExit(t)
			stopWatch()
			if code := in.exitCode(); code != 0 {
				t.Fatalf("instance %d exited with status %d after SIGTERM:\n%s", in.slot, code, in.out)
			}
			exited := time.Since(start)
			l.mark() // from here on, requests answered as this slot come from the new process
			if downAt.Load() == 0 {
				t.Errorf("instance %d exited %v after SIGTERM before HAProxy showed it DOWN", in.slot, exited.Round(time.Millisecond))
			} else {
				t.Logf("instance %d: DOWN in HAProxy %v after SIGTERM, exited after %v",
					in.slot, time.Duration(downAt.Load()).Round(time.Millisecond), exited.Round(time.Millisecond))
			}
			in.start(t)
			c.waitStatus(t, "UP", in.slot)
			slot := strconv.Itoa(in.slot)
			testnode.Eventually(t, 30*time.Second, "the restarted instance "+slot+" serves", func() bool {
				_, n := l.served(slot)
				return n > 0
			})
		}
		l.stop()
		if n := l.failures.Load(); n != 0 {
			t.Errorf("%d of %d requests failed during the rolling restart; last: %s", n, n+l.ok.Load(), l.lastError())
		} else {
			t.Logf("rolling restart: %d requests, none failed", l.ok.Load())
		}
	})

	// The counter was incremented under the cluster-wide lock by every instance in turn:
	// no two increments saw the same value.
	l.stop()
	counts := l.counts()
	seen := map[int64]bool{}
	for _, n := range counts {
		if seen[n] {
			t.Errorf("two increments returned the count %d: the lock let two instances in", n)
		}
		seen[n] = true
	}
	if len(counts) == 0 {
		t.Error("no increment succeeded")
	}
}

// cluster is three instances of the app and HAProxy in front of them.
type cluster struct {
	instances []*instance
	web       string // HAProxy's frontend, host:port
	stats     string // its statistics page, host:port
}

func startCluster(t *testing.T, haproxy string) *cluster {
	t.Helper()
	dialect := store.SQLite
	if os.Getenv(testdb.EnvPostgres) != "" {
		dialect = store.Postgres
	}
	db := testdb.New(t, dialect)
	bin := filepath.Join(t.TempDir(), "app")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/twicehq/twice/examples/deploy/app").CombinedOutput(); err != nil {
		t.Fatalf("go build the example app: %v\n%s", err, out)
	}
	c := &cluster{web: freeAddr(t), stats: freeAddr(t)}
	env := append(os.Environ(), db.Env()...)
	env = append(env, "TWICE_SERVICE=deploy-test", "SHUTDOWN_DELAY="+shutdownDelay, "SHUTDOWN_TIMEOUT=20s")
	proxyEnv := append(os.Environ(), "LISTEN="+c.web, "STATS="+c.stats, "CHECK_INTER="+checkInter, "CHECK_FAST="+checkFast)
	for slot := 1; slot <= 3; slot++ {
		in := &instance{slot: slot, addr: freeAddr(t), bin: bin, env: env, out: &testnode.Buffer{}}
		_, port, _ := net.SplitHostPort(in.addr)
		in.env = append(slices.Clip(in.env), "PORT="+port, "TWICE_INSTANCE="+strconv.Itoa(slot))
		proxyEnv = append(proxyEnv, fmt.Sprintf("APP%d=%s", slot, in.addr))
		c.instances = append(c.instances, in)
		in.start(t)
	}
	t.Cleanup(func() {
		for _, in := range c.instances {
			in.kill()
			if t.Failed() {
				t.Logf("instance %d's output:\n%s", in.slot, in.out)
			}
		}
	})

	out := &testnode.Buffer{}
	cmd := exec.Command(haproxy, "-db", "-f", "haproxy.cfg")
	cmd.Env = proxyEnv
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start haproxy: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM) // a hard stop that still flushes its output
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("haproxy's output, last 300 lines:\n%s", tail(out.String(), 300))
		}
	})
	return c
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "")
}

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// serverStats reads HAProxy's CSV statistics: per server of the backend "app", its
// columns by name.
func (c *cluster) serverStats() (map[string]map[string]string, error) {
	resp, err := http.Get("http://" + c.stats + "/stats;csv")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("stats: %s", resp.Status)
	}
	r := csv.NewReader(resp.Body)
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil {
		return nil, err
	}
	if len(rows) < 2 {
		return nil, errors.New("stats: no rows")
	}
	header := rows[0]
	header[0] = strings.TrimPrefix(header[0], "# ")
	out := map[string]map[string]string{}
	for _, row := range rows[1:] {
		m := map[string]string{}
		for i, v := range row {
			if i < len(header) {
				m[header[i]] = v
			}
		}
		if m["pxname"] == "app" && strings.HasPrefix(m["svname"], "app") {
			out[m["svname"]] = m
		}
	}
	return out, nil
}

// waitStatus waits until HAProxy shows each slot's server with status (UP or DOWN, no
// transition left).
func (c *cluster) waitStatus(t *testing.T, status string, slots ...int) {
	t.Helper()
	testnode.EventuallyNil(t, 60*time.Second, func() error {
		st, err := c.serverStats()
		if err != nil {
			return err
		}
		for _, s := range slots {
			if got := st["app"+strconv.Itoa(s)]["status"]; got != status {
				return fmt.Errorf("waiting for app%d to be %s in HAProxy: it is %q", s, status, got)
			}
		}
		return nil
	})
}

// sessions is the number of sessions HAProxy has sent to slot's server so far.
func (c *cluster) sessions(t *testing.T, slot int) int {
	t.Helper()
	st, err := c.serverStats()
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(st["app"+strconv.Itoa(slot)]["stot"])
	if err != nil {
		t.Fatalf("stats: stot of app%d: %v", slot, err)
	}
	return n
}

// watchDown records in downAt when HAProxy first shows slot's server DOWN, until the
// returned function is called.
func (c *cluster) watchDown(t *testing.T, slot int, start time.Time, downAt *atomic.Int64) (stop func()) {
	t.Helper()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
			st, err := c.serverStats()
			if err == nil && strings.HasPrefix(st["app"+strconv.Itoa(slot)]["status"], "DOWN") {
				downAt.Store(int64(time.Since(start)))
				return
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// instance is one child process of the app, restarted on the same address.
type instance struct {
	slot int
	addr string
	bin  string
	env  []string
	out  *testnode.Buffer

	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

func (in *instance) start(t *testing.T) {
	t.Helper()
	cmd := exec.Command(in.bin)
	cmd.Env = in.env
	cmd.Stdout, cmd.Stderr = in.out, in.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start instance %d: %v", in.slot, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	in.cmd, in.done = cmd, done
}

func (in *instance) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := in.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal instance %d: %v", in.slot, err)
	}
}

func (in *instance) waitExit(t *testing.T) {
	t.Helper()
	select {
	case <-in.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("instance %d has not exited within 60s:\n%s", in.slot, in.out)
	}
}

func (in *instance) exitCode() int { return in.cmd.ProcessState.ExitCode() }

func (in *instance) kill() {
	if in.cmd == nil {
		return
	}
	_ = in.cmd.Process.Kill()
	<-in.done
}

// load is a steady loop of requests through HAProxy: GET / and POST /count.
type load struct {
	ok, failures atomic.Int64

	mu        sync.Mutex // protects the fields below
	by        map[string]int64
	sinceMark map[string]int64
	lastErr   string
	increment []int64 // the counts POST /count answered

	done chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

func (c *cluster) startLoad(t *testing.T) *load {
	l := &load{by: map[string]int64{}, sinceMark: map[string]int64{}, done: make(chan struct{})}
	client := &http.Client{Timeout: 30 * time.Second}
	url := "http://" + c.web
	for w := range 4 {
		l.wg.Go(func() {
			for {
				select {
				case <-l.done:
					return
				case <-time.After(10 * time.Millisecond):
				}
				if w%2 == 0 {
					l.record(client.Get(url + "/"))
				} else {
					l.record(client.Post(url+"/count", "", nil))
				}
			}
		})
	}
	t.Cleanup(l.stop)
	return l
}

func (l *load) record(resp *http.Response, err error) {
	var body []byte
	if err == nil {
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("%s %s: %s %s", resp.Request.Method, resp.Request.URL.Path, resp.Status, strings.TrimSpace(string(body)))
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.failures.Add(1)
		l.lastErr = err.Error()
		return
	}
	l.ok.Add(1)
	in := resp.Header.Get("X-Instance")
	l.by[in]++
	l.sinceMark[in]++
	if resp.Request.Method == http.MethodPost {
		var c struct{ Count int64 }
		if json.Unmarshal(body, &c) == nil {
			l.increment = append(l.increment, c.Count)
		}
	}
}

func (l *load) stop() {
	l.once.Do(func() { close(l.done) })
	l.wg.Wait()
}

// reset zeroes the counts of successes, failures and requests per instance.
func (l *load) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ok.Store(0)
	l.failures.Store(0)
	l.by = map[string]int64{}
	l.lastErr = ""
}

// mark starts counting requests per instance afresh for servedSinceMark.
func (l *load) mark() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sinceMark = map[string]int64{}
}

// served returns how many requests instance answered since the last reset, and since the
// last mark.
func (l *load) served(instance string) (sinceReset, sinceMark int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.by[instance], l.sinceMark[instance]
}

func (l *load) servedBy(instance string) int64 {
	n, _ := l.served(instance)
	return n
}

func (l *load) lastError() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastErr
}

func (l *load) counts() []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.increment)
}

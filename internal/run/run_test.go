package run

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnode"
)

// Liveness bounds: generous, since the instances are processes on a loaded machine.
const (
	soon = 30 * time.Second
	long = 90 * time.Second
)

// bundle is one test's runner, its instances' directory and its output.
type bundle struct {
	r   *Runner
	dir string
	out *testnode.Buffer
	url string
}

// setup starts a runner of the test server (mode "serve" unless cfg names another in Env)
// and waits until every instance is ready.
func setup(t *testing.T, cfg Config, mode string) *bundle {
	t.Helper()
	dir := t.TempDir()
	out := &testnode.Buffer{}
	cfg.Command = []string{os.Args[0]}
	cfg.Env = append(cfg.Env, envChild+"="+mode, envDir+"="+dir)
	cfg.Listen = "127.0.0.1:0"
	cfg.Dir = dir
	cfg.Out = out
	if cfg.HealthInterval == 0 {
		cfg.HealthInterval = 200 * time.Millisecond
	}
	r, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.Close()
		if t.Failed() {
			t.Logf("output:\n%s", out.String())
		}
	})
	b := &bundle{r: r, dir: dir, out: out, url: "http://" + r.Addr()}
	b.waitReady(t)
	return b
}

// waitReady waits until every instance is ready.
func (b *bundle) waitReady(t *testing.T) {
	t.Helper()
	testnode.Eventually(t, long, "every instance ready", func() bool {
		for _, s := range b.r.Instances() {
			if s.State != Ready {
				return false
			}
		}
		return true
	})
}

func (b *bundle) state(slot int) State { return b.r.Instances()[slot-1].State }

var client = &http.Client{Timeout: soon}

// get returns the body of a GET of path through the proxy, failing t on any error or a
// status other than 200.
func get(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	body, err := tryGet(c, url)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

func tryGet(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return string(body), nil
}

func TestHealthCheckRemovesAndReturnsAnInstance(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{Instances: 2}, "serve")
	sick := filepath.Join(b.dir, "sick-1")
	if err := os.WriteFile(sick, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	testnode.Eventually(t, soon, "instance 1 unhealthy", func() bool { return b.state(1) == Unhealthy })
	for range 10 {
		if got := get(t, client, b.url); got != "2" {
			t.Fatalf("a request went to instance %s, which fails its health check", got)
		}
	}
	if !strings.Contains(b.out.String(), "instance 1 failed its health check (status 503)") {
		t.Errorf("the removal was not printed")
	}

	os.Remove(sick)
	testnode.Eventually(t, soon, "instance 1 ready again", func() bool { return b.state(1) == Ready })
	seen := map[string]bool{}
	for range 4 {
		seen[get(t, client, b.url)] = true
	}
	if !seen["1"] || !seen["2"] {
		t.Fatalf("round robin over two ready instances served only %v", seen)
	}
}

func TestStickyCookie(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{Instances: 3, Sticky: true}, "serve")
	jar, _ := cookiejar.New(nil)
	sticky := &http.Client{Timeout: soon, Jar: jar}
	first := get(t, sticky, b.url)
	for range 10 {
		if got := get(t, sticky, b.url); got != first {
			t.Fatalf("a client with the cookie of instance %s was sent to %s", first, got)
		}
	}
	// Without the cookie, round robin.
	if a, c := get(t, client, b.url), get(t, client, b.url); a == c {
		t.Fatalf("two requests without the cookie both went to instance %s", a)
	}

	// The instance it sticks to fails: the client goes elsewhere, and sticks there.
	slot, _ := strconv.Atoi(first)
	if err := os.WriteFile(filepath.Join(b.dir, "sick-"+first), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	testnode.Eventually(t, soon, "the sticky instance unhealthy", func() bool { return b.state(slot) == Unhealthy })
	second := get(t, sticky, b.url)
	if second == first {
		t.Fatalf("sent to instance %s, which fails its health check", first)
	}
	os.Remove(filepath.Join(b.dir, "sick-"+first))
	testnode.Eventually(t, soon, "the first instance back", func() bool { return b.state(slot) == Ready })
	for range 5 {
		if got := get(t, sticky, b.url); got != second {
			t.Fatalf("the cookie now names instance %s, the request went to %s", second, got)
		}
	}
}

func TestConsole(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{Instances: 2}, "serve")
	get(t, client, b.url)
	status := b.r.statusText()
	for _, want := range []string{"1 ready", "2 ready", "| 1 requests, 0 failed"} {
		if !strings.Contains(status, want) {
			t.Errorf("status line %q lacks %q", status, want)
		}
	}
	if out := b.out.String(); !strings.Contains(out, "1     | instance 1 listening on") || strings.Contains(out, "\x1b[") {
		t.Errorf("plain output expected, each line prefixed with its instance:\n%s", out)
	}

	var colored, tty testnode.Buffer
	newConsole(&colored, true, false, 12).line(2, "2", "hello")
	if got, want := colored.String(), "\x1b[33m2     | \x1b[0mhello\n"; got != want {
		t.Errorf("coloured line %q, want %q", got, want)
	}
	c := newConsole(&tty, false, true, 3)
	c.setStatus("status")
	c.line(1, "1", "log")
	if got, want := tty.String(), "\r\x1b[Kstatus\r\x1b[K1     | log\nstatus"; got != want {
		t.Errorf("a line under a status line: %q, want %q", got, want)
	}
}

func TestParseSticky(t *testing.T) {
	for v, want := range map[string]int{"1": 1, "3": 3, "0": 0, "4": 0, "01": 0, "-1": 0, "+1": 0, "": 0, "x": 0, "1000": 0} {
		got, ok := parseSticky(v, 3)
		if ok != (want != 0) || got != want {
			t.Errorf("parseSticky(%q, 3) = %d, %v; want %d", v, got, ok, want)
		}
	}
}

func TestRollingRestartFailsNoRequest(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{Instances: 3}, "serve")
	before := b.r.Instances()

	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := tryGet(client, b.url); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				} else {
					ok.Add(1)
				}
			}
		})
	}
	testnode.Eventually(t, soon, "requests flowing", func() bool { return ok.Load() > 20 })
	err := b.r.RollingRestart(context.Background())
	n := ok.Load()
	testnode.Eventually(t, soon, "requests flowing after the restart", func() bool { return ok.Load() > n+20 })
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if failed.Load() > 0 {
		t.Fatalf("%d of %d requests failed during the rolling restart; the first: %v", failed.Load(), failed.Load()+ok.Load(), firstErr.Load())
	}
	for i, s := range b.r.Instances() {
		if s.PID == before[i].PID || s.State != Ready {
			t.Errorf("instance %d: pid %d → %d, %s; want a new process, ready", s.Slot, before[i].PID, s.PID, s.State)
		}
	}
	if _, f := b.r.Totals(); f != 0 {
		t.Errorf("the proxy counts %d failed requests", f)
	}
	if !strings.Contains(b.out.String(), "rolling restart done") {
		t.Errorf("the end of the rolling restart was not printed")
	}
}

// A rolling restart stops at an instance that does not come back ready, and leaves the
// others as they were.
func TestRollingRestartStopsAtAnInstanceNotReady(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{Instances: 2, ReadyTimeout: 2 * time.Second}, "serve")
	before := b.r.Instances()
	if err := os.WriteFile(filepath.Join(b.dir, "sick-1"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	err := b.r.RollingRestart(context.Background())
	if err == nil || !strings.Contains(err.Error(), "instance 1 not ready within 2s") {
		t.Fatalf("rolling restart with instance 1 sick: %v", err)
	}
	after := b.r.Instances()
	if after[0].PID == before[0].PID || after[1].PID != before[1].PID {
		t.Fatalf("pids %d %d → %d %d: want instance 1 restarted and 2 left alone", before[0].PID, before[1].PID, after[0].PID, after[1].PID)
	}
	if after[0].State != Starting || after[1].State != Ready {
		t.Fatalf("states %s %s, want starting (never passed a check) and ready", after[0].State, after[1].State)
	}
}

// With --restart never a crashed instance stays down, until a rolling restart starts it.
func TestRestartNeverLeavesItDown(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{Instances: 2, Restart: Never}, "serve")
	if err := syscall.Kill(b.r.Instances()[0].PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testnode.Eventually(t, soon, "instance 1 down", func() bool {
		return b.state(1) == Down && strings.Contains(b.out.String(), "instance 1 stays down")
	})
	if got := get(t, client, b.url); got != "2" {
		t.Fatalf("served by %s, which is down", got)
	}
	if err := b.r.RollingRestart(context.Background()); err != nil {
		t.Fatal(err)
	}
	b.waitReady(t)
	if s := b.r.Instances()[0]; s.Restarts != 0 {
		t.Errorf("instance 1 counts %d restarts; the rolling restart is not one", s.Restarts)
	}
}

func TestChaosKillRestarts(t *testing.T) {
	t.Parallel()
	// Every 3 s: each instance has time to come back between the kills that hit it.
	b := setup(t, Config{Instances: 2, Chaos: 3 * time.Second, Faults: []Fault{Kill}, Restart: OnFailure}, "serve")
	testnode.Eventually(t, long, "an instance killed by chaos, restarted and ready", func() bool {
		for _, s := range b.r.Instances() {
			if s.Restarts > 0 && s.State == Ready {
				return true
			}
		}
		return false
	})
	out := b.out.String()
	for _, want := range []string{"chaos: SIGKILL instance", "exited: killed by SIGKILL", "restarts in"} {
		if !strings.Contains(out, want) {
			t.Errorf("the output does not say %q", want)
		}
	}
}

func TestChaosPauseResumes(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{Instances: 2, Chaos: time.Second, Faults: []Fault{Stop}}, "serve")
	testnode.Eventually(t, long, "an instance paused and continued", func() bool {
		return strings.Contains(b.out.String(), "chaos: SIGCONT instance")
	})
	out := b.out.String()
	if !strings.Contains(out, "chaos: SIGSTOP instance") {
		t.Errorf("the pause was not printed")
	}
	for _, s := range b.r.Instances() {
		if s.Restarts != 0 {
			t.Errorf("instance %d restarted %d times after pauses alone", s.Slot, s.Restarts)
		}
	}
}

func TestChaosDatabaseFaultsNeedPostgres(t *testing.T) {
	_, err := Start(context.Background(), Config{Command: []string{os.Args[0]}, Chaos: time.Second, Faults: []Fault{Drop},
		DSN: "sqlite:" + filepath.Join(t.TempDir(), "x.db"), Listen: "127.0.0.1:0"})
	if err == nil || !strings.Contains(err.Error(), "needs PostgreSQL") {
		t.Fatalf("drop on SQLite: %v", err)
	}
}

// On PostgreSQL each instance reaches the database through a fault proxy of its own, which
// chaos cuts for one instance at a time.
func TestChaosCutsOneInstancesDatabase(t *testing.T) {
	t.Parallel()
	dsn := testdb.PostgresURL(t)
	// Chaos every hour: the test injects the fault itself, at a moment it knows.
	b := setup(t, Config{Instances: 2, DSN: dsn, Chaos: time.Hour, Faults: []Fault{Drop}}, "serve")
	direct := func(slot int) string { return "http://127.0.0.1:" + strconv.Itoa(b.r.Instances()[slot-1].Port) + "/db" }
	for slot := 1; slot <= 2; slot++ {
		if got := get(t, client, direct(slot)); got != "ok" {
			t.Fatalf("instance %d: %q", slot, got)
		}
	}
	in := b.r.instances[0]
	if !strings.Contains(in.env[2], in.dbProxy.Addr()) || strings.Contains(in.env[2], postgresTarget(dsn)) {
		t.Fatalf("instance 1's %s does not lead to its proxy at %s", in.env[2], in.dbProxy.Addr())
	}
	s := b.r.Instances()[0]
	b.r.mu.Lock()
	gen := in.gen
	b.r.mu.Unlock()
	b.r.inject(in, Drop, s.PID, gen, 10*time.Second) // ample to see it, on a slow machine too
	if _, err := tryGet(client, direct(1)); err == nil {
		t.Fatal("instance 1 reached its database while chaos cut it")
	}
	if got := get(t, client, direct(2)); got != "ok" {
		t.Fatalf("instance 2, not cut: %q", got)
	}
	testnode.EventuallyNil(t, soon, func() error { _, err := tryGet(client, direct(1)); return err })
	for _, want := range []string{"chaos: instance 1's database connections cut for 10s", "chaos: instance 1 reaches its database again"} {
		if !strings.Contains(b.out.String(), want) {
			t.Errorf("the output does not say %q", want)
		}
	}
}

func TestShutdownLeavesNoProcess(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{Instances: 2, Grace: time.Second}, "stubborn")
	var pids []int
	for _, s := range b.r.Instances() {
		pids = append(pids, s.PID)
		var pid int
		testnode.EventuallyNil(t, soon, func() error {
			data, err := os.ReadFile(filepath.Join(b.dir, "grandchild-"+strconv.Itoa(s.Slot)))
			if err == nil {
				pid, err = strconv.Atoi(string(data))
			}
			return err
		})
		pids = append(pids, pid)
	}
	for _, pid := range pids {
		if !alive(pid) {
			t.Fatalf("pid %d is not running before the stop", pid)
		}
	}
	if err := b.r.Close(); err != nil {
		t.Fatal(err)
	}
	for _, s := range b.r.Instances() {
		if s.PID != 0 || s.State != Down {
			t.Errorf("instance %d: pid %d, %s after the stop", s.Slot, s.PID, s.State)
		}
	}
	// The instances were waited for; their orphaned children are reaped by init, soon.
	for _, pid := range pids {
		testnode.Eventually(t, soon, fmt.Sprintf("pid %d gone", pid), func() bool { return !alive(pid) })
	}
	if !strings.Contains(b.out.String(), "did not stop within 1s of SIGTERM: SIGKILL") {
		t.Errorf("the SIGKILL after the grace period was not printed")
	}
}

// alive says whether pid is a process that has not exited (a zombie has).
func alive(pid int) bool {
	if data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil {
		// pid (comm) STATE …: comm may hold spaces and parentheses, the state follows the last ")".
		s := string(data)
		i := strings.LastIndexByte(s, ')')
		return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
	} else if _, err := os.Stat("/proc/self"); err == nil {
		return false // a /proc without the pid: gone
	}
	return syscall.Kill(pid, 0) == nil
}

func TestWebSocketPassthrough(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{Instances: 2}, "serve")
	ctx, cancel := context.WithTimeout(context.Background(), soon)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+b.r.Addr()+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	for i := range 3 {
		msg := fmt.Sprintf("hello %d", i)
		if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, got, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasSuffix(got, []byte(":"+msg)) || !(got[0] == '1' || got[0] == '2') {
			t.Fatalf("echo %q, want INSTANCE:%s", got, msg)
		}
	}
	c.Close(websocket.StatusNormalClosure, "")
	testnode.Eventually(t, soon, "the connection no longer in flight", func() bool {
		b.r.mu.Lock()
		defer b.r.mu.Unlock()
		for _, in := range b.r.instances {
			if in.inflight != 0 {
				return false
			}
		}
		return true
	})
}

func TestRetryAndPassiveEjection(t *testing.T) {
	t.Parallel()
	// Checks every minute once ready: only the requests can find that instance 1 went deaf.
	b := setup(t, Config{Instances: 2, Sticky: true, HealthInterval: time.Minute}, "serve")
	port := b.r.Instances()[0].Port
	if got := get(t, client, "http://127.0.0.1:"+strconv.Itoa(port)+"/deaf"); got != "deaf" {
		t.Fatal(got)
	}
	to1 := func(method string, body io.Reader) (*http.Response, error) {
		req, _ := http.NewRequest(method, b.url, body)
		req.AddCookie(&http.Cookie{Name: StickyCookie, Value: "1"})
		return client.Do(req)
	}
	// A POST with a body is never sent twice.
	resp, err := to1(http.MethodPost, strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("a POST to a deaf instance: %s, want 502", resp.Status)
	}
	// A GET is tried again on the other instance.
	for range FailAfterDefault - 1 {
		resp, err := to1(http.MethodGet, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != "2" {
			t.Fatalf("a GET: %s %q, want 200 from instance 2", resp.Status, body)
		}
		if c := resp.Cookies(); len(c) != 1 || c[0].Value != "2" {
			t.Fatalf("cookies %v, want the one of instance 2", c)
		}
	}
	if s := b.r.Instances()[0]; s.State != Unhealthy || s.Failures != FailAfterDefault {
		t.Fatalf("instance 1 after %d failed requests: %s, %d failures; want unhealthy", FailAfterDefault, s.State, s.Failures)
	}
	if !strings.Contains(b.out.String(), "instance 1 failed 3 requests in a row") {
		t.Errorf("the ejection was not printed")
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "no command"},
		{Config{Command: []string{"x"}, Instances: -1}, "instances"},
		{Config{Command: []string{"x"}, Instances: 65}, "instances"},
		{Config{Command: []string{"x"}, HealthPath: "readyz"}, "must start with /"},
		{Config{Command: []string{"x"}, Restart: "sometimes"}, "restart policy"},
		{Config{Command: []string{"x"}, Chaos: time.Millisecond}, "chaos"},
		{Config{Command: []string{"x"}, Listen: "8080"}, "HOST:PORT"},
		{Config{Command: []string{"x"}, FailAfter: -2}, "fail after"},
		{Config{Command: []string{os.Args[0]}, DSN: "mysql://x", Listen: "127.0.0.1:0"}, "DSN"},
		{Config{Command: []string{"./no-such-program"}, Listen: "127.0.0.1:0", Dir: t.TempDir()}, "no command to run"},
	} {
		_, err := Start(context.Background(), c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error saying %q", c.cfg, err, c.want)
		}
	}
}

func TestParseFaults(t *testing.T) {
	got, err := ParseFaults("kill, stop,delay,drop")
	if err != nil || len(got) != 4 {
		t.Fatalf("%v %v", got, err)
	}
	for _, bad := range []string{"", "kill,", "kill,kill", "explode"} {
		if _, err := ParseFaults(bad); err == nil {
			t.Errorf("ParseFaults(%q) took it", bad)
		}
	}
}

func FuzzParseSticky(f *testing.F) {
	for _, s := range []string{"1", "3", "0", "01", "-1", "999", "", "1\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		slot, ok := parseSticky(v, 5)
		if !ok {
			return
		}
		if slot < 1 || slot > 5 || strconv.Itoa(slot) != v {
			t.Fatalf("parseSticky(%q) = %d: not the slot it spells", v, slot)
		}
	})
}

func FuzzParseFaults(f *testing.F) {
	for _, s := range []string{"kill", "kill,stop", "delay, drop", ",", "kill,kill", "stop,,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		faults, err := ParseFaults(s)
		if err != nil {
			return
		}
		seen := map[Fault]bool{}
		for _, x := range faults {
			if seen[x] {
				t.Fatalf("%q: %s twice", s, x)
			}
			seen[x] = true
			switch x {
			case Kill, Stop, Delay, Drop:
			default:
				t.Fatalf("%q: unknown fault %q", s, x)
			}
		}
	})
}

func FuzzParseRestart(f *testing.F) {
	for _, s := range []string{"never", "on-failure", "always", "", "Always"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRestart(s)
		if err == nil && string(r) != s {
			t.Fatalf("%q read as %q", s, r)
		}
	})
}

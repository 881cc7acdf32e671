// Package run is the engine of `twice run`: it starts N instances of any command, each with
// its own PORT, puts a health-checking reverse proxy in front of them, merges their logs,
// restarts the ones that crash, restarts them all one at a time on request, and injects
// faults on a schedule.
package run

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twicehq/twice/internal/faultproxy"
	"github.com/twicehq/twice/store"
)

// Environment variables every instance is started with.
const (
	// EnvPort is the port the instance must listen on (on 127.0.0.1 or every interface).
	EnvPort = "PORT"
	// EnvInstance is the instance's slot, "1" to "N"; a restarted instance keeps its slot.
	EnvInstance = "TWICE_INSTANCE"
	// EnvDSN is the database every instance shares; twice.Config.DSN defaults to it.
	EnvDSN = "TWICE_DSN"
)

// Defaults of [Config].
const (
	InstancesDefault      = 3
	ListenDefault         = "127.0.0.1:8080"
	HealthPathDefault     = "/readyz"
	HealthIntervalDefault = time.Second
	HealthTimeoutDefault  = 2 * time.Second
	FailAfterDefault      = 3
	GraceDefault          = 10 * time.Second
	ReadyTimeoutDefault   = time.Minute
	ChaosLatencyDefault   = 200 * time.Millisecond
	// DirDefault is the directory, under the working directory, of the default database.
	DirDefault = ".twice"
)

// Config configures a [Runner].
type Config struct {
	// Command is the program and its arguments, started once per instance. Required.
	Command []string
	// Instances is how many instances run. Defaults to [InstancesDefault].
	Instances int
	// Listen is the proxy's address; port 0 picks a free one ([Runner.Addr] tells which).
	// Defaults to [ListenDefault].
	Listen string
	// HealthPath is the path of the active health check: a response of 2xx or 3xx passes.
	// Defaults to [HealthPathDefault].
	HealthPath string
	// HealthInterval is how often each ready instance is checked; an instance that is not
	// ready is checked ten times as often (at most every 100 ms). Defaults to 1 second.
	HealthInterval time.Duration
	// HealthTimeout bounds one check. Defaults to 2 seconds.
	HealthTimeout time.Duration
	// FailAfter is how many requests in a row an instance may fail to answer (a connection
	// error) before it gets no traffic until a health check passes. Defaults to 3.
	FailAfter int
	// Sticky sends each client back to the instance that served it first, by a cookie.
	// Defaults to false: round robin.
	Sticky bool
	// Restart says what happens when an instance exits by itself. Defaults to [OnFailure].
	Restart Restart
	// Chaos is how often one fault hits a random instance. Defaults to 0: never.
	Chaos time.Duration
	// Faults are the faults chaos picks from. Defaults to every fault that applies: the
	// database faults only on a PostgreSQL URL DSN.
	Faults []Fault
	// ChaosLatency is how late the [Delay] fault makes each chunk of database traffic.
	// Defaults to 200 ms.
	ChaosLatency time.Duration
	// DSN is the database all instances share, given to them as $TWICE_DSN. Defaults to a
	// SQLite file under [DirDefault] in Dir.
	DSN string
	// Dir is the instances' working directory. Defaults to the current one.
	Dir string
	// Env is added to the instances' environment (after the current process's). Defaults to
	// none.
	Env []string
	// Grace is how long an instance has to exit after SIGTERM before its process group is
	// killed. Defaults to 10 seconds.
	Grace time.Duration
	// ReadyTimeout is how long a rolling restart waits for a restarted instance to pass its
	// health check before it stops there. Defaults to 1 minute.
	ReadyTimeout time.Duration
	// Out receives the instances' merged output and the runner's own lines. Defaults to
	// io.Discard.
	Out io.Writer
	// Color prefixes each instance's lines in its own colour. Defaults to false.
	Color bool
	// StatusLine redraws a status line at the bottom of Out, which must be a terminal.
	// Defaults to false.
	StatusLine bool
}

// WithDefaults returns c with its zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Instances == 0 {
		c.Instances = InstancesDefault
	}
	if c.Listen == "" {
		c.Listen = ListenDefault
	}
	if c.HealthPath == "" {
		c.HealthPath = HealthPathDefault
	}
	if c.HealthInterval == 0 {
		c.HealthInterval = HealthIntervalDefault
	}
	if c.HealthTimeout == 0 {
		c.HealthTimeout = HealthTimeoutDefault
	}
	if c.FailAfter == 0 {
		c.FailAfter = FailAfterDefault
	}
	if c.Restart == "" {
		c.Restart = OnFailure
	}
	if c.ChaosLatency == 0 {
		c.ChaosLatency = ChaosLatencyDefault
	}
	if c.Grace == 0 {
		c.Grace = GraceDefault
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = ReadyTimeoutDefault
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	return c
}

func (c *Config) validate() error {
	switch {
	case len(c.Command) == 0 || c.Command[0] == "":
		return errors.New("run: no command to run")
	case c.Instances < 1 || c.Instances > 64:
		return fmt.Errorf("run: %d instances: want 1 to 64", c.Instances)
	case !strings.HasPrefix(c.HealthPath, "/"):
		return fmt.Errorf("run: health check path %q must start with /", c.HealthPath)
	case c.HealthInterval < 0 || c.HealthTimeout < 0 || c.Grace < 0 || c.ReadyTimeout < 0 || c.Chaos < 0 || c.ChaosLatency < 0:
		return errors.New("run: durations must not be negative")
	case c.FailAfter < 1:
		return fmt.Errorf("run: fail after %d failed requests: want at least 1", c.FailAfter)
	case c.Chaos > 0 && c.Chaos < 10*time.Millisecond:
		return fmt.Errorf("run: chaos every %v: want at least 10ms", c.Chaos)
	}
	if _, err := ParseRestart(string(c.Restart)); err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("run: listen address %q: want HOST:PORT", c.Listen)
	}
	return nil
}

// Runner runs the instances and the proxy in front of them until its context ends.
type Runner struct {
	cfg       Config
	ln        net.Listener
	srv       *http.Server
	transport *http.Transport // the proxy's connections to the instances
	console   *console
	instances []*instance
	dbTarget  string // host:port of PostgreSQL behind the per-instance fault proxies, or ""

	mu       sync.Mutex // protects the fields of every instance marked "guarded by mu", next, failed, rolling
	next     int        // round robin position
	served   int64      // requests the proxy answered
	failed   int64      // requests the proxy could not pass to any instance
	rolling  bool       // a rolling restart is under way
	stopping bool       // the runner is shutting down: no instance starts again

	ctx       context.Context
	cancel    context.CancelFunc
	hurry     chan struct{} // closed by Kill: instances stopping get SIGKILL without their grace
	hurryOnce sync.Once
	wg        sync.WaitGroup // every goroutine of the runner
	done      chan struct{}  // closed once everything has stopped
	err       error          // why the runner stopped early, set before done closes
}

// Start starts the instances and the proxy, and returns once the proxy listens. Everything
// stops, children included, when ctx ends or [Runner.Close] is called; [Runner.Wait] waits
// for that.
func Start(ctx context.Context, cfg Config) (*Runner, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := cfg.resolve(); err != nil {
		return nil, err
	}
	r := &Runner{cfg: cfg, done: make(chan struct{}), hurry: make(chan struct{})}
	if cfg.Chaos > 0 {
		r.dbTarget = postgresTarget(cfg.DSN)
	}
	faults, err := r.chaosFaults()
	if err != nil {
		return nil, err
	}
	r.cfg.Faults = faults

	r.ln, err = net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("run: the proxy cannot listen: %w", err)
	}
	ports, err := freePorts(cfg.Instances, r.ln.Addr())
	if err != nil {
		r.ln.Close()
		return nil, err
	}
	r.console = newConsole(cfg.Out, cfg.Color, cfg.StatusLine, cfg.Instances)
	if err := r.makeInstances(ports); err != nil {
		r.closeProxies()
		r.ln.Close()
		return nil, err
	}

	r.ctx, r.cancel = context.WithCancel(ctx)
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	r.transport = &http.Transport{DialContext: dialer.DialContext, MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}
	r.srv = &http.Server{Handler: r.proxy(), ReadHeaderTimeout: 30 * time.Second}
	r.say("proxy on http://%s in front of %d instances of %s; database %s", r.Addr(), cfg.Instances,
		strings.Join(cfg.Command, " "), store.Redact(cfg.DSN))
	if cfg.Chaos > 0 {
		names := fmt.Sprint(r.cfg.Faults)
		if r.dbTarget == "" {
			names += " (the database faults need PostgreSQL as a postgres:// URL DSN)"
		}
		r.say("chaos every %v, one of %s", cfg.Chaos, names)
	}
	r.wg.Go(func() {
		if err := r.srv.Serve(r.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.fail(fmt.Errorf("run: the proxy stopped: %w", err))
		}
	})
	for _, in := range r.instances {
		r.wg.Go(func() { r.supervise(in) })
		r.wg.Go(func() { r.check(in) })
	}
	if cfg.Chaos > 0 {
		r.wg.Go(r.chaos)
	}
	if cfg.StatusLine {
		r.wg.Go(r.statusLoop)
	}
	go r.shutdown()
	return r, nil
}

// resolve fills in what depends on the machine: the working directory, the default database
// (making its directory), and checks that the command and the DSN make sense.
func (c *Config) resolve() error {
	if c.Dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return fmt.Errorf("run: %w", err)
		}
		c.Dir = wd
	}
	path := c.Command[0]
	if strings.Contains(path, "/") && !filepath.IsAbs(path) {
		path = filepath.Join(c.Dir, path) // where the instances will look for it
	}
	if _, err := exec.LookPath(path); err != nil {
		return fmt.Errorf("run: no command to run: %w", err)
	}
	if c.DSN == "" {
		dir := filepath.Join(c.Dir, DirDefault)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("run: the default database's directory: %w", err)
		}
		c.DSN = "sqlite:" + filepath.Join(dir, "twice.db")
	}
	if _, err := store.ParseDSN(c.DSN); err != nil {
		return fmt.Errorf("run: %w", err)
	}
	return nil
}

// makeInstances makes the slots, on the given ports, each with its fault proxy in front of
// PostgreSQL when chaos may cut its database.
func (r *Runner) makeInstances(ports []int) error {
	for i := range r.cfg.Instances {
		in := &instance{slot: i + 1, port: ports[i], revive: make(chan struct{}, 1)}
		in.env = []string{EnvPort + "=" + strconv.Itoa(in.port), EnvInstance + "=" + strconv.Itoa(in.slot), EnvDSN + "=" + r.cfg.DSN}
		if r.dbTarget != "" {
			px, err := faultproxy.New(r.dbTarget)
			if err != nil {
				return fmt.Errorf("run: the database proxy of instance %d: %w", in.slot, err)
			}
			in.dbProxy = px
			in.env[2] = EnvDSN + "=" + withHost(r.cfg.DSN, px.Addr())
		}
		r.instances = append(r.instances, in)
	}
	return nil
}

// Addr is the proxy's address, host:port.
func (r *Runner) Addr() string { return r.ln.Addr().String() }

// Close stops everything, children included, and waits for it.
func (r *Runner) Close() error {
	r.cancel()
	return r.Wait()
}

// Kill stops everything as Close does, except that the instances get SIGKILL at once rather
// than after their grace period: the answer to a second Ctrl-C. It does not wait.
func (r *Runner) Kill() {
	r.hurryOnce.Do(func() { close(r.hurry) })
	r.cancel()
}

// Wait waits until everything has stopped. It returns nil after a stop the runner was asked
// for, or the error that stopped it.
func (r *Runner) Wait() error {
	<-r.done
	return r.err
}

// Done is closed once everything has stopped.
func (r *Runner) Done() <-chan struct{} { return r.done }

func (r *Runner) fail(err error) {
	r.mu.Lock()
	if r.err == nil {
		r.err = err
	}
	r.mu.Unlock()
	r.cancel()
}

// shutdown waits for the end of the context, then stops the proxy and every instance.
func (r *Runner) shutdown() {
	<-r.ctx.Done()
	r.mu.Lock()
	r.stopping = true
	r.mu.Unlock()
	r.say("stopping")
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	r.srv.Shutdown(sctx)
	cancel()
	r.srv.Close() // what Shutdown left: hijacked connections are the handlers' own
	var wg sync.WaitGroup
	for _, in := range r.instances {
		wg.Go(func() { r.stopProcess(in) })
	}
	wg.Wait()
	r.wg.Wait()
	for _, in := range r.instances {
		in.closeLogs()
	}
	r.closeProxies()
	r.transport.CloseIdleConnections()
	r.console.clearStatus()
	r.say("stopped")
	close(r.done)
}

func (r *Runner) closeProxies() {
	for _, in := range r.instances {
		if in.dbProxy != nil {
			in.dbProxy.Close()
		}
	}
}

// say prints a line of the runner's own.
func (r *Runner) say(format string, args ...any) {
	r.console.line(0, "twice", fmt.Sprintf(format, args...))
}

// freePorts returns n distinct free local ports, none of them the proxy's. Each is free when
// chosen; an instance that cannot listen on its port fails its health checks, visibly.
func freePorts(n int, proxy net.Addr) ([]int, error) {
	seen := map[int]bool{}
	if a, ok := proxy.(*net.TCPAddr); ok {
		seen[a.Port] = true
	}
	var ports []int
	var held []net.Listener // held until all are chosen, so the kernel gives n different ones
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for len(ports) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("run: no free port for an instance: %w", err)
		}
		held = append(held, l)
		p := l.Addr().(*net.TCPAddr).Port
		if !seen[p] {
			seen[p] = true
			ports = append(ports, p)
		}
	}
	return ports, nil
}

// postgresTarget is the host:port of a postgres:// URL DSN, or "" when the DSN is in the
// keyword form or names several hosts: database faults then stay off.
func postgresTarget(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Host == "" || strings.Contains(u.Host, ",") {
		return ""
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "5432"
	}
	return net.JoinHostPort(host, port)
}

// withHost is the URL DSN with its host:port replaced.
func withHost(dsn, hostport string) string {
	u, _ := url.Parse(dsn) // postgresTarget parsed it already
	u.Host = hostport
	return u.String()
}

package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
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
	"time"

	"github.com/twicehq/twice"
	runner "github.com/twicehq/twice/internal/run"
	"github.com/twicehq/twice/store"
)

// shopSource is where the demo shop's source sits in the repository.
const shopSource = "examples/shop"

// shopSecretEnv is the environment variable the demo shop reads its cluster secret from.
const shopSecretEnv = "SHOP_CLUSTER_SECRET"

// shopFlags are the flags of `twice demo` that only the shop takes.
type shopFlags struct {
	duration time.Duration
	port     int
	chaos    time.Duration
}

func (f *shopFlags) register(fs *flag.FlagSet) {
	fs.DurationVar(&f.duration, "for", 0, "stop by itself after D, first checking the shop's pages through the proxy: exit 1 if one fails (0: run until Ctrl-C)")
	fs.IntVar(&f.port, "port", 8080, "the proxy's port on 127.0.0.1 (0: a free one, printed)")
	fs.DurationVar(&f.chaos, "chaos", 0, "kill or pause a random instance every D, as twice run --chaos (0: never)")
}

// set reports whether any of the shop's flags was given.
func (f *shopFlags) set(fs *flag.FlagSet) bool {
	given := false
	fs.Visit(func(fl *flag.Flag) { given = given || fl.Name == "for" || fl.Name == "port" || fl.Name == "chaos" })
	return given
}

func (f *shopFlags) validate() error {
	switch {
	case f.duration < 0:
		return fmt.Errorf("%w: demo: --for %v: want 0 or more", errUsage, f.duration)
	case f.port < 0 || f.port > 65535:
		return fmt.Errorf("%w: demo: --port %d: want 0 to 65535", errUsage, f.port)
	case f.chaos != 0 && f.chaos < 100*time.Millisecond:
		return fmt.Errorf("%w: demo: --chaos %v: want at least 100ms, or 0 for none", errUsage, f.chaos)
	}
	return nil
}

// demoShop builds the demo shop from the repository, runs it three times behind twice run's
// proxy, and prints where to open it. It runs until ctx ends or, with --for, until the time
// is up; then it checks the shop's pages through the proxy (see checkShop) and fails if
// any check does.
func demoShop(ctx context.Context, db *dbFlags, f shopFlags, stdout io.Writer) error {
	if err := f.validate(); err != nil {
		return err
	}
	f0, _ := stdout.(*os.File)
	color := f0 != nil && runner.IsTerminal(f0) && os.Getenv("NO_COLOR") == ""
	// The instances' lines and the demo's own share the output.
	stdout = &lockedWriter{w: stdout}
	shop, err := startShop(ctx, shopOptions{dsn: db.dsn, schema: db.schema, port: f.port, chaos: f.chaos, out: stdout, color: color})
	if err != nil {
		return err
	}
	defer shop.stop()
	fmt.Fprintf(stdout, "\ntwice demo: the shop runs three times behind %s on %s\n", shop.url, shop.db)
	fmt.Fprintf(stdout, "  open %s in a browser: log in, order, chat. The footer names the instance that served each page.\n", shop.url)
	if f.chaos > 0 {
		fmt.Fprintf(stdout, "  chaos: every %v an instance is killed or paused (on PostgreSQL, or its database slowed or cut); every page keeps working.\n", f.chaos)
	}
	if f.duration == 0 {
		fmt.Fprintln(stdout, "  Ctrl-C stops it.")
		select {
		case <-ctx.Done():
		case <-shop.r.Done():
			return fmt.Errorf("demo: the runner stopped: %v", shop.r.Wait())
		}
		return nil
	}
	fmt.Fprintf(stdout, "  it stops by itself in %v, after checking its own pages.\n", f.duration)
	select {
	case <-ctx.Done():
		return nil // Ctrl-C before the time was up: nothing to check
	case <-shop.r.Done():
		return fmt.Errorf("demo: the runner stopped: %v", shop.r.Wait())
	case <-time.After(f.duration):
	}
	fmt.Fprintf(stdout, "\ntwice demo: checking the shop's pages through %s\n", shop.url)
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	res, err := checkShop(cctx, shop.url, stdout)
	if err != nil {
		return fmt.Errorf("demo: the shop failed its check: %w", err)
	}
	if f.chaos == 0 && len(res.instances) < 2 {
		return fmt.Errorf("demo: the shop failed its check: every page came from one instance (%v); the proxy spreads requests over three", keys(res.instances))
	}
	if f.chaos == 0 && res.forwarded == 0 {
		return errors.New("demo: the shop failed its check: no cart request was forwarded, though the proxy spreads them over three instances and one owns the cart")
	}
	fmt.Fprintf(stdout, "twice demo: every check passed; pages served by instances %s\n", strings.Join(keys(res.instances), ", "))
	return nil
}

// shopOptions configure [startShop].
type shopOptions struct {
	dsn, schema string        // the database, "" for a fresh SQLite file
	port        int           // the proxy's, 0 for a free one
	chaos       time.Duration // 0: none
	out         io.Writer     // the instances' merged output and the runner's lines
	color       bool          // each instance's lines in its colour (out is a terminal)
}

// lockedWriter serialises the writes of the runner's goroutines and the demo's own.
type lockedWriter struct {
	mu sync.Mutex // protects w
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// runningShop is the demo shop running: three instances behind the proxy.
type runningShop struct {
	r    *runner.Runner
	url  string // the proxy's, http://127.0.0.1:PORT
	db   string // the database, redacted
	dir  string // the binary and the default database
	stop func()
}

// startShop builds the shop and starts it three times under twice run, and returns once
// every instance is ready (one, under chaos).
func startShop(ctx context.Context, o shopOptions) (*runningShop, error) {
	root, err := shopRoot()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "twice-demo-")
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(dir, "shop")
	fmt.Fprintf(o.out, "twice demo: building %s (go build)\n", filepath.Join(root, shopSource))
	if err := goBuild(ctx, root, bin); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	dsn := o.dsn
	if dsn == "" {
		dsn = os.Getenv(twice.EnvDSN)
	}
	if dsn == "" {
		dsn = "sqlite:" + filepath.Join(dir, "shop.db")
	}
	// The instances share a cluster secret, as production's must: it signs the cart
	// requests they forward to each other. A fresh random one per demo, never written down,
	// so nobody copies it into production.
	env := []string{twice.EnvService + "=shop", shopSecretEnv + "=" + randHex(32)}
	if o.schema != "" {
		env = append(env, twice.EnvSchema+"="+o.schema)
	}
	r, err := runner.Start(ctx, runner.Config{
		Command: []string{bin}, Instances: 3, Listen: net.JoinHostPort("127.0.0.1", strconv.Itoa(o.port)),
		DSN: dsn, Dir: dir, Env: env, Chaos: o.chaos, Grace: 5 * time.Second,
		Out: o.out, Color: o.color,
	})
	if err != nil {
		os.RemoveAll(dir)
		if o.port != 0 && strings.Contains(err.Error(), "cannot listen") {
			err = fmt.Errorf("%w (--port 0 picks a free port)", err)
		}
		return nil, err
	}
	s := &runningShop{r: r, url: "http://" + r.Addr(), db: dsnShown(dsn), dir: dir}
	s.stop = func() {
		r.Close()
		os.RemoveAll(dir)
	}
	// Under chaos an instance may be down at any moment: one ready is enough to begin.
	want := 3
	if o.chaos > 0 {
		want = 1
	}
	if err := s.waitReady(ctx, want, time.Minute); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// waitReady waits until want instances passed a health check.
func (s *runningShop) waitReady(ctx context.Context, want int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		ready := 0
		for _, in := range s.r.Instances() {
			if in.State == runner.Ready {
				ready++
			}
		}
		if ready >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: %d of 3 shop instances ready after %v: see their output above", ready, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.r.Done():
			return fmt.Errorf("demo: the runner stopped: %v", s.r.Wait())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// shopRoot finds the twice repository the demo shop's source is in: the working directory
// or one above it.
func shopRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if isTwiceModule(dir) {
			if _, err := os.Stat(filepath.Join(dir, shopSource, "main.go")); err != nil {
				return "", fmt.Errorf("demo: the twice repository at %s has no %s: the demo shop's source is missing", dir, shopSource)
			}
			return dir, nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("demo: the demo shop is built from its source, %s in the twice repository, and %s is not inside one: "+
				"run `go run ./cmd/twice demo` in a clone of the repository (or `twice demo --scenario leader`, which needs no source)", shopSource, wd)
		}
	}
}

// isTwiceModule reports whether dir holds the go.mod of module github.com/twicehq/twice.
func isTwiceModule(dir string) bool {
	f, err := os.Open(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); strings.HasPrefix(line, "module ") {
			return strings.TrimSpace(strings.TrimPrefix(line, "module ")) == "github.com/twicehq/twice"
		}
	}
	return false
}

// goBuild builds the shop into bin with the go command on PATH.
func goBuild(ctx context.Context, root, bin string) error {
	gocmd, err := exec.LookPath("go")
	if err != nil {
		return errors.New("demo: the demo shop is built from its source and needs the go command, which is not on PATH")
	}
	cmd := exec.CommandContext(ctx, gocmd, "build", "-o", bin, "./"+shopSource)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("demo: building the shop (go build ./%s in %s): %v\n%s", shopSource, root, err, out)
	}
	return nil
}

// dsnShown is the DSN as printed: a SQLite file as its path, others without secrets.
func dsnShown(dsn string) string {
	if p, ok := strings.CutPrefix(dsn, "sqlite:"); ok {
		return "the SQLite file " + p
	}
	return store.Redact(dsn)
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// httpClient is the check's client: its own cookies, redirects not followed (each is checked).
func httpClient(jar http.CookieJar) *http.Client {
	return &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

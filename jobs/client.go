package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/store"
)

// Defaults of [Config].
const (
	DefaultConcurrency        = 1000
	DefaultMaxAttempts        = 25
	DefaultPoll               = time.Second
	DefaultShutdownTimeout    = 10 * time.Second
	DefaultRescueInterval     = time.Second
	DefaultPruneInterval      = time.Minute
	DefaultCompletedRetention = 24 * time.Hour
	DefaultCancelledRetention = 24 * time.Hour
	DefaultDiscardedRetention = 7 * 24 * time.Hour
	DefaultCompleteBatch      = 1000
)

// Bus channels. Both carry hints only (see package bus): a wake-up names a queue to look
// at, a cancellation the id of a job whose cancel_requested flag its owner should re-read.
// Neither changes a job by itself.
const (
	// WakeChannel carries a queue name: look for available jobs in it now.
	WakeChannel = "twice.jobs"
	// CancelChannel carries a job id: a cancellation of it may have been requested.
	CancelChannel = "twice.jobs.cancel"
)

// Config configures a [Client]: its queues, retries, timings and retention. What it works
// on (store, bus, service, instance) comes in its [block.Deps].
type Config struct {
	// Queues are queues this instance works besides its workers' own, and the settings of
	// any queue it works. A worker works the queue its kind names (the Queue of its
	// [ArgsWithOpts] Opts, else "default"); a job enqueued to another queue with
	// [Opts].Queue runs only on instances that work that queue: list it here (or call
	// [Client.Queue]). The queues listed start fetching once a worker is registered, so an
	// instance that only enqueues takes no jobs. A queue without an entry runs with the
	// zero QueueConfig's defaults. Append to it on a zero Config:
	// cfg.Jobs.Queues = append(cfg.Jobs.Queues, jobs.QueueConfig{Name: "mail", Concurrency: 50}).
	// Defaults to none.
	Queues []QueueConfig
	// MaxAttempts is how many times a job runs before it is discarded, unless the job says
	// otherwise. Defaults to 25.
	MaxAttempts int
	// Backoff is the delay before retry number attempt (1 after the first failure).
	// Defaults to [DefaultBackoff]: exponential from 1 second, capped at 1 hour, ±20% jitter.
	Backoff func(attempt int) time.Duration
	// Timeout bounds one attempt of a job that sets no timeout of its own. Defaults to 0:
	// none (a crashed instance's jobs are rescued by liveness, not by time).
	Timeout time.Duration
	// Poll is how often a queue looks for jobs when no wake-up arrives while it is busy
	// (woken since its last look, or running jobs here), and how often running jobs are
	// checked for cancellation. A quiet queue rests longer while the bus vouches for the
	// wake-ups: until its next scheduled job is due, at most block.Deps.Backstop (every
	// write that makes a job available, now or later, wakes the queue). It stays at Poll
	// while jobs wait that it could not take: a key held, the queue paused or at its
	// GlobalLimit; a queue at its RateLimit looks again when the window has room.
	// Defaults to 1 second.
	Poll time.Duration
	// CompleteBatch is the most attempts finished by one statement. Defaults to 1000.
	CompleteBatch int
	// ShutdownTimeout is how long Close lets running jobs finish before it cancels them
	// and hands them back to the queue (Close's ctx may end it sooner). Defaults to 10 seconds.
	ShutdownTimeout time.Duration
	// RescueInterval is how often each instance looks for the jobs of dead instances while
	// the bus cannot vouch for its delivery (block.Deps.Backstop applies while it can). A
	// death is noticed sooner: an instance rescues at once when the cluster finds another
	// dead, by its liveness lock or its heartbeat (cluster.Membership.OnDeath). Defaults to
	// 1 second.
	RescueInterval time.Duration
	// PruneInterval is how often the leader deletes finished jobs past their retention.
	// Defaults to 1 minute.
	PruneInterval time.Duration
	// CompletedRetention, CancelledRetention and DiscardedRetention are how long finished
	// jobs are kept. Default to 24 hours, 24 hours and 7 days.
	CompletedRetention, CancelledRetention, DiscardedRetention time.Duration
}

// QueueConfig configures one queue on one instance.
type QueueConfig struct {
	// Name is the queue, as jobs name it in [Opts].Queue. Required.
	Name string
	// Concurrency is how many of the queue's jobs run at once on this instance, each on a
	// goroutine of its own; it is also the most jobs fetched by one statement. Set it lower
	// for jobs that must not run that wide (a rate-limited API, a small connection pool),
	// or cap the queue across the cluster with GlobalLimit. Defaults to 1000.
	Concurrency int
	// GlobalLimit caps the queue's running jobs across all instances, those configured
	// without it included: it is stored with the queue when this instance starts working it
	// (see [Client.SetGlobalLimit]). Defaults to 0: this instance declares no cap, and
	// follows the stored one if another instance or an operator set it. A queue without a
	// cap costs nothing for it: its fetch takes no lock and reads the cap in the statement
	// that already checks whether the queue is paused.
	GlobalLimit int
	// RateLimit caps how many of the queue's jobs start per period across all instances,
	// optionally per value of a field of the jobs' args (see [RateLimit]). It is stored
	// with the queue when this instance starts working it, as GlobalLimit is (see
	// [Client.SetRateLimit]). Defaults to none.
	RateLimit RateLimit
}

func (c Config) withDefaults() Config {
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.Backoff == nil {
		c.Backoff = DefaultBackoff
	}
	if c.Poll <= 0 {
		c.Poll = DefaultPoll
	}
	if c.CompleteBatch <= 0 {
		c.CompleteBatch = DefaultCompleteBatch
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.RescueInterval <= 0 {
		c.RescueInterval = DefaultRescueInterval
	}
	if c.PruneInterval <= 0 {
		c.PruneInterval = DefaultPruneInterval
	}
	if c.CompletedRetention <= 0 {
		c.CompletedRetention = DefaultCompletedRetention
	}
	if c.CancelledRetention <= 0 {
		c.CancelledRetention = DefaultCancelledRetention
	}
	if c.DiscardedRetention <= 0 {
		c.DiscardedRetention = DefaultDiscardedRetention
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	seen := map[string]bool{}
	for _, q := range c.Queues {
		if err := checkName("queue", q.Name, MaxQueueLen); err != nil {
			errs = append(errs, err)
		}
		if seen[q.Name] {
			errs = append(errs, fmt.Errorf("queue %q is listed twice in Queues", q.Name))
		}
		seen[q.Name] = true
		if q.Concurrency < 0 || q.GlobalLimit < 0 {
			errs = append(errs, fmt.Errorf("queue %q: Concurrency and GlobalLimit must not be negative", q.Name))
		}
		if err := q.RateLimit.check(q.Name); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("jobs: invalid Config: %w", errors.Join(errs...))
	}
	return nil
}

// DefaultBackoff waits 2^(attempt-1) seconds, at most an hour, with ±20% jitter so retries
// of many jobs that failed together spread out.
func DefaultBackoff(attempt int) time.Duration {
	d := time.Hour
	if attempt < 13 {
		d = min(time.Hour, time.Second<<max(attempt-1, 0))
	}
	jitter := 0.8 + 0.4*rand.Float64()
	return time.Duration(float64(d) * jitter)
}

// Client enqueues, works and administers the jobs of one service. A Client made with [New]
// can enqueue and administer at once; it works jobs once [Client.Start] has run and a
// worker is registered for a queue's jobs.
type Client struct {
	d   block.Deps
	s   *store.Store
	q   *queries
	e   engine // what differs between the dialects
	cfg Config
	log *slog.Logger

	mu          sync.Mutex // protects workers, producers, unannounced, noted, started, working, stopped; orders making note
	workers     map[string]*worker
	producers   map[string]*producer
	unannounced map[string]bool // queues fetched but not yet recorded in twice_queue_workers
	noted       map[string]bool // queues this instance woke without working them, logged once
	started     bool
	working     bool // the client has started and works a queue
	stopped     bool

	comp      *completer
	note      atomic.Pointer[notifier] // made on the first hint sent, under mu; nil without a bus
	rescuer   *loop.Loop               // rescues the jobs of dead instances
	canceller *loop.Loop               // cancels running jobs whose cancellation is recorded, when kicked
	unsub     []func()
	runCtx    context.Context               // its end cancels every running job (see producer.cancelRunning); cancelled last on Close
	observer  atomic.Pointer[func(Attempt)] // see Observe; nil for none
	runCancel context.CancelCauseFunc
}

// worker is a registered worker with its argument type erased.
type worker struct {
	kind string
	run  func(ctx context.Context, row *Row) error
	opts Opts
}

// New returns a client working on d. It starts nothing and runs no statement: it enqueues
// and administers at once, and works jobs once [Client.Start] has run and a worker is
// registered (see [Register]).
func New(d block.Deps, cfg Config) (*Client, error) {
	d = d.WithDefaults()
	if err := d.Validate("jobs", true); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.Queues = slices.Clone(cfg.Queues) // the caller's slice may change later
	c := &Client{d: d, s: d.Store, q: queriesFor(d.Store), cfg: cfg, log: d.Logger,
		workers: map[string]*worker{}, producers: map[string]*producer{}, unannounced: map[string]bool{}, noted: map[string]bool{}}
	c.e = newEngine(c, d.Store)
	c.runCtx, c.runCancel = context.WithCancelCause(context.Background())
	return c, nil
}

// Config returns the client's configuration with defaults filled in.
func (c *Client) Config() Config { return c.cfg }

// Register adds the worker for T's kind to c. The worker works the queue T names (the
// Queue of T's [ArgsWithOpts] Opts, else the default queue), and the first worker
// registered starts every queue [Config].Queues lists; fetching begins once the client
// has started. Jobs of the kind enqueued to a queue this instance does not work run only
// on instances that work it.
func Register[T Args](c *Client, w Worker[T]) error {
	var zero T
	kind := kindOf(zero)
	if err := checkName("kind", kind, MaxKindLen); err != nil {
		return err
	}
	var opts Opts
	if wo, ok := any(zero).(ArgsWithOpts); ok {
		opts = wo.Opts()
	}
	wk := &worker{kind: kind, opts: opts, run: func(ctx context.Context, row *Row) error {
		job := &Job[T]{Row: row}
		if err := decodeArgsInto(row.Args, &job.Args); err != nil {
			return &decodeError{err: err}
		}
		return w.Work(ctx, job)
	}}
	queue := opts.Queue
	if queue == "" {
		queue = DefaultQueue
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return ErrClosed
	}
	if _, dup := c.workers[kind]; dup {
		return fmt.Errorf("jobs: a worker for kind %q is already registered", kind)
	}
	c.workers[kind] = wk
	c.ensureWorkedLocked(queue)
	return nil
}

// KindOf is the kind of the argument type T, from Kind on its zero value; empty when that
// panics (a pointer type whose Kind reads its receiver): Register refuses such a type.
func KindOf[T Args]() string {
	var zero T
	return kindOf(zero)
}

// kindOf calls Kind on a zero T, tolerating a pointer type's nil receiver.
func kindOf[T Args](zero T) (kind string) {
	defer func() {
		if recover() != nil {
			kind = ""
		}
	}()
	return zero.Kind()
}

// decodeError marks arguments that cannot be decoded: retrying will not help.
type decodeError struct{ err error }

func (e *decodeError) Error() string { return e.err.Error() }
func (e *decodeError) Unwrap() error { return e.err }

// Queue makes this instance work queue (with its [Config].Queues settings, or the
// defaults) even without a worker registered: for jobs enqueued with an explicit
// [Opts].Queue. Listing the queue in Config.Queues does the same once a worker is
// registered.
func (c *Client) Queue(name string) error {
	if err := checkName("queue", name, MaxQueueLen); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return ErrClosed
	}
	c.ensureProducerLocked(name)
	return nil
}

func (c *Client) ensureProducerLocked(queue string) {
	if _, ok := c.producers[queue]; ok {
		return
	}
	p := newProducer(c, queue, c.queueConfig(queue))
	c.producers[queue] = p
	switch {
	case c.working:
		p.start()
		c.unannounced[queue] = true
		c.rescuer.Kick() // its round records the queue
	case c.started:
		c.workLocked()
	}
}

// notifier returns the sender of wake-up hints, making it first if make is set; nil
// without a bus.
func (c *Client) notifier(make bool) *notifier {
	if n := c.note.Load(); n != nil || !make || c.d.Bus == nil {
		return n
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.note.Load() == nil && !c.stopped {
		c.note.Store(newNotifier(c))
	}
	return c.note.Load()
}

// Start lets the client work: once a worker is registered (see [Register], [Config].Queues
// and [Client.Queue]), each queue this instance works fetches jobs and is recorded as
// worked here, wake-ups and cancellations are received from the bus, and the jobs of dead
// instances are rescued every RescueInterval. An instance that only enqueues runs none of
// it. The node calls Start when the application first uses its jobs.
func (c *Client) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return ErrClosed
	}
	if c.started {
		return nil
	}
	c.started = true
	if len(c.producers) > 0 {
		c.workLocked()
	}
	return nil
}

// workLocked starts what working jobs needs, and every producer, once the client has
// started and has one.
func (c *Client) workLocked() {
	if c.working {
		return
	}
	c.working = true
	c.comp = newCompleter(c)
	c.rescuer = loop.Start(c.rescueRound)
	if c.d.Members != nil {
		// An instance found dead (its liveness lock freed, or its heartbeat gone silent)
		// is dead in the database: rescue its jobs now, not at the next round.
		c.d.Members.OnDeath(c.rescuer.Kick)
	}
	c.canceller = loop.StartAfter(loop.Forever, c.cancelRound)
	if b := c.d.Bus; b != nil {
		c.unsub = append(c.unsub,
			b.Subscribe(WakeChannel, c.onWake),
			b.Subscribe(CancelChannel, c.onCancel))
	}
	for q, p := range c.producers {
		p.start()
		c.unannounced[q] = true
	}
}

func (c *Client) onWake(m bus.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m.Lost {
		for _, p := range c.producers {
			p.wake(false)
		}
		return
	}
	if p := c.producers[string(m.Payload)]; p != nil {
		p.wake(true)
	}
}

// onCancel treats a cancellation signal as what every bus message is, a hint: it never
// cancels a job itself (anyone who can NOTIFY, publish on NATS or insert a signal row could
// send one). A signal naming a job this instance runs makes it re-read which of its running
// jobs have cancel_requested set, and only those are cancelled; a signal naming anything
// else is ignored, so a flood of them costs no query.
func (c *Client) onCancel(m bus.Message) {
	if !m.Lost {
		id, err := strconv.ParseInt(string(m.Payload), 10, 64)
		if err != nil || !c.runsHere(id) {
			return
		}
	}
	c.kickCancels()
}

// runsHere reports whether job id runs on this instance.
func (c *Client) runsHere(id int64) bool {
	for _, p := range c.producerList() {
		if p.runs(id) {
			return true
		}
	}
	return false
}

func (c *Client) producerList() []*producer {
	c.mu.Lock()
	defer c.mu.Unlock()
	ps := make([]*producer, 0, len(c.producers))
	for _, p := range c.producers {
		ps = append(ps, p)
	}
	return ps
}

// kickCancels asks the cancel loop to look; looks asked for while one runs merge into one.
func (c *Client) kickCancels() { c.canceller.Kick() }

// cancelRound cancels, each time a signal or a producer's poll asks, the running jobs of
// this instance whose cancellation the database records.
func (c *Client) cancelRound(ctx context.Context) time.Duration {
	if err := c.cancelRequested(ctx); err != nil && ctx.Err() == nil {
		c.log.Debug("jobs: looking for cancelled jobs failed; the next poll looks again", "err", err)
	}
	return loop.Forever
}

// cancelRequested cancels the contexts of this instance's running jobs whose
// cancel_requested flag is set.
func (c *Client) cancelRequested(ctx context.Context) error {
	ps := c.producerList()
	running := 0
	for _, p := range ps {
		running += p.numRunning()
	}
	if running == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, loop.StatementTimeout)
	defer cancel()
	rows, err := c.s.Reader().Query(ctx, c.q.cancelRequested, c.d.Service, c.d.Instance)
	if err != nil {
		return err
	}
	ids, err := scanIDList(rows)
	if err != nil {
		return err
	}
	for _, id := range ids {
		for _, p := range ps {
			p.cancelJob(id)
		}
	}
	return nil
}

// wakeLocal wakes this process's producer of queue directly; soon says the jobs may not be
// committed yet, so an empty fetch is retried a few times shortly after.
func (c *Client) wakeLocal(queue string, soon bool) {
	c.mu.Lock()
	p := c.producers[queue]
	if p == nil {
		c.noteUnworkedLocked(queue)
	}
	c.mu.Unlock()
	if p != nil {
		p.wake(soon)
	}
}

// Close drains the client: queues stop fetching, running jobs get ShutdownTimeout (or until
// ctx ends) to finish, then their contexts are cancelled with [ErrShutdown] and the jobs
// still running are handed back to the queue for another instance. Finished attempts are
// recorded before Close returns.
func (c *Client) Close(ctx context.Context) error {
	ps, working, first := c.stop()
	if !first {
		return nil
	}
	if note := c.note.Load(); note != nil {
		defer note.close()
	}
	if !working {
		c.runCancel(ErrShutdown)
		return nil
	}
	c.stopWorking(ps)
	grace, cancel := context.WithTimeout(ctx, c.cfg.ShutdownTimeout)
	defer cancel()
	for _, p := range ps {
		p.waitIdle(grace)
	}
	// Past the grace: cancel what still runs, give it a moment to return, then hand back
	// whatever ignores its context. A late completion of a handed-back attempt is refused.
	c.runCancel(ErrShutdown)
	last, cancel2 := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel2()
	for _, p := range ps {
		p.waitIdle(last)
	}
	var errs []error
	c.comp.close(ctx)
	for _, p := range ps {
		if err := p.handBackRunning(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	c.withdraw(ctx)
	return errors.Join(errs...)
}

// Abandon stops the client as a crash of its process would, for tests that crash an
// instance (see block.Block): queues stop fetching, and the running jobs' contexts are
// cancelled with [ErrShutdown] at once. Nothing is written: what the jobs return is
// dropped, so they stay running under this instance until the others find it dead and
// rescue them (the attempt counts), and its queues stay recorded as worked here (counted
// only while it is alive). Abandon waits, until ctx ends, for the workers to return.
func (c *Client) Abandon(ctx context.Context) {
	ps, working, first := c.stop()
	if !first {
		return
	}
	if note := c.note.Load(); note != nil {
		defer note.close()
	}
	if working {
		c.comp.abandon() // first: what a job returns from here on is dropped
		c.stopWorking(ps)
	}
	c.runCancel(ErrShutdown)
	for _, p := range ps {
		p.waitIdle(ctx)
	}
}

// stop marks the client stopped and ends its subscriptions. It returns the producers,
// whether the client works, and whether this was the first call.
func (c *Client) stop() (ps []*producer, working, first bool) {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return nil, false, false
	}
	c.stopped = true
	ps = make([]*producer, 0, len(c.producers))
	for _, p := range c.producers {
		ps = append(ps, p)
	}
	working, unsub := c.working, c.unsub
	c.mu.Unlock()
	for _, u := range unsub {
		u()
	}
	return ps, working, true
}

// stopWorking stops the rescue and cancel loops and the producers' fetching.
func (c *Client) stopWorking(ps []*producer) {
	c.rescuer.Stop()
	c.canceller.Stop()
	for _, p := range ps {
		p.stopFetching()
	}
}

// publish sends a signal if there is a bus; a lost signal only delays work until a poll.
func (c *Client) publish(ctx context.Context, channel, payload string) {
	if c.d.Bus == nil {
		return
	}
	if err := c.d.Bus.Publish(ctx, channel, []byte(payload)); err != nil && ctx.Err() == nil {
		c.log.Debug("jobs: signal not sent; a poll finds the work", "channel", channel, "err", err)
	}
}

func (c *Client) wakeQueues(ctx context.Context, queues map[string]bool) {
	for q := range queues {
		c.wakeLocal(q, false)
		c.publish(ctx, WakeChannel, q)
	}
}

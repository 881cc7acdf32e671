package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twicehq/twice/bus"
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

// Bus channels: wake-ups carry a queue name, cancellations a job id.
const (
	wakeChannel   = "twice.jobs"
	cancelChannel = "twice.jobs.cancel"
)

// Config configures a [Client]. The node fills Service, Instance, Bus and Logger.
type Config struct {
	// Service scopes every job: services sharing a database never see each other's jobs.
	Service string
	// Instance is this instance's id, recorded as the owner of the jobs it runs; rescue
	// asks the cluster whether it is alive.
	Instance string
	// Bus carries wake-ups and cancellations between instances. Defaults to nil: polling
	// only.
	Bus bus.Bus
	// Logger defaults to slog.Default(). It should carry the instance id.
	Logger *slog.Logger
	// Panics, if set, counts the panics recovered from workers and Backoff; each is also
	// logged with its stack, and a worker's fails its attempt. Defaults to nil: logged only.
	Panics *atomic.Int64

	// Queues configures the queues this instance works. A queue with a registered worker
	// but no entry runs with the zero QueueConfig's defaults. Defaults to none.
	Queues map[string]QueueConfig
	// MaxAttempts is how many times a job runs before it is discarded, unless the job says
	// otherwise. Defaults to 25.
	MaxAttempts int
	// Backoff is the delay before retry number attempt (1 after the first failure).
	// Defaults to [DefaultBackoff]: exponential from 1 second, capped at 1 hour, ±20% jitter.
	Backoff func(attempt int) time.Duration
	// Timeout bounds one attempt of a job that sets no timeout of its own. Defaults to 0:
	// none (a crashed instance's jobs are rescued by liveness, not by time).
	Timeout time.Duration
	// Poll is how often an idle queue looks for jobs when no wake-up arrives, and how
	// often running jobs are checked for cancellation. Defaults to 1 second.
	Poll time.Duration
	// CompleteBatch is the most attempts finished by one statement. Defaults to 1000.
	CompleteBatch int
	// ShutdownTimeout is how long Stop lets running jobs finish before it cancels them
	// and hands them back to the queue (Stop's ctx may end it sooner). Defaults to 10 seconds.
	ShutdownTimeout time.Duration
	// RescueInterval is how often each instance rescues the jobs of dead instances.
	// Defaults to 1 second.
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
	// Concurrency is how many of the queue's jobs run at once on this instance, each on a
	// goroutine of its own; it is also the most jobs fetched by one statement. Set it lower
	// for jobs that must not run that wide (a rate-limited API, a small connection pool),
	// or cap the queue across the cluster with GlobalLimit. Defaults to 1000.
	Concurrency int
	// GlobalLimit caps the queue's running jobs across all instances. Defaults to 0: no
	// cap (and no cost: fetching takes no lock).
	GlobalLimit int
}

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
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
	if c.Service == "" {
		errs = append(errs, errors.New("Service is required"))
	}
	for name, q := range c.Queues {
		if err := checkName("queue", name, MaxQueueLen); err != nil {
			errs = append(errs, err)
		}
		if q.Concurrency < 0 || q.GlobalLimit < 0 {
			errs = append(errs, fmt.Errorf("queue %q: Concurrency and GlobalLimit must not be negative", name))
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
	s   *store.Store
	q   *queries
	cfg Config
	log *slog.Logger

	mu        sync.Mutex // protects workers, producers, started, stopped
	workers   map[string]*worker
	producers map[string]*producer
	started   bool
	stopped   bool

	comp       *completer
	note       *notifier // nil without a bus
	stopRescue chan struct{}
	rescued    chan struct{} // closed when the rescue loop has ended
	unsub      []func()
	runCtx     context.Context // parent of every job's context; cancelled last on Stop
	runCancel  context.CancelCauseFunc
}

// worker is a registered worker with its argument type erased.
type worker struct {
	kind string
	run  func(ctx context.Context, row *Row) error
	opts Opts
}

// New returns a client on s. It starts nothing: see [Client.Start].
func New(s *store.Store, cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := &Client{s: s, q: queriesFor(s), cfg: cfg, log: cfg.Logger,
		workers: map[string]*worker{}, producers: map[string]*producer{}}
	c.runCtx, c.runCancel = context.WithCancelCause(context.Background())
	if cfg.Bus != nil {
		c.note = newNotifier(c)
	}
	return c, nil
}

// Config returns the client's configuration with defaults filled in.
func (c *Client) Config() Config { return c.cfg }

// Register adds the worker for T's kind to c. Jobs of the kind are worked in the queue
// their Opts name (from T's [ArgsWithOpts] or the default queue): registering the first
// worker of a queue starts fetching it once the client has started.
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
		args, err := DecodeArgs[T](row.Args)
		if err != nil {
			return &decodeError{err: err}
		}
		return w.Work(ctx, &Job[T]{Row: row, Args: args})
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
	c.ensureProducerLocked(queue)
	return nil
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

// Queue makes this instance work queue (with cfg's concurrency) even before a worker of its
// own is registered, for queues whose kinds are registered under other queues' defaults but
// enqueued with an explicit Opts.Queue.
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
	qc := c.cfg.Queues[queue]
	if qc.Concurrency <= 0 {
		qc.Concurrency = DefaultConcurrency
	}
	p := newProducer(c, queue, qc)
	c.producers[queue] = p
	if c.started {
		p.start()
	}
}

// Start begins working: each queue with a registered worker (or configured with
// [Client.Queue]) fetches jobs, wake-ups and cancellations are received from the bus, and
// the jobs of dead instances are rescued every RescueInterval.
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
	c.comp = newCompleter(c)
	c.stopRescue, c.rescued = make(chan struct{}), make(chan struct{})
	go c.rescueLoop(c.stopRescue, c.rescued)
	if b := c.cfg.Bus; b != nil {
		c.unsub = append(c.unsub,
			b.Subscribe(wakeChannel, c.onWake),
			b.Subscribe(cancelChannel, c.onCancel))
	}
	for _, p := range c.producers {
		p.start()
	}
	return nil
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

func (c *Client) onCancel(m bus.Message) {
	c.mu.Lock()
	ps := make([]*producer, 0, len(c.producers))
	for _, p := range c.producers {
		ps = append(ps, p)
	}
	c.mu.Unlock()
	if m.Lost {
		for _, p := range ps {
			p.wake(false) // the next look checks for cancellations
		}
		return
	}
	id, err := strconv.ParseInt(string(m.Payload), 10, 64)
	if err != nil {
		return
	}
	for _, p := range ps {
		p.cancelJob(id)
	}
}

// wakeLocal wakes this process's producer of queue directly; soon says the jobs may not be
// committed yet, so an empty fetch is retried a few times shortly after.
func (c *Client) wakeLocal(queue string, soon bool) {
	c.mu.Lock()
	p := c.producers[queue]
	c.mu.Unlock()
	if p != nil {
		p.wake(soon)
	}
}

// Stop drains the client: queues stop fetching, running jobs get ShutdownTimeout (or until
// ctx ends) to finish, then their contexts are cancelled with [ErrShutdown] and the jobs
// still running are handed back to the queue for another instance. Finished attempts are
// recorded before Stop returns.
func (c *Client) Stop(ctx context.Context) error {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return nil
	}
	c.stopped = true
	started := c.started
	ps := make([]*producer, 0, len(c.producers))
	for _, p := range c.producers {
		ps = append(ps, p)
	}
	unsub := c.unsub
	c.mu.Unlock()
	for _, u := range unsub {
		u()
	}
	if c.note != nil {
		defer c.note.close()
	}
	if !started {
		c.runCancel(ErrShutdown)
		return nil
	}
	close(c.stopRescue)
	<-c.rescued
	for _, p := range ps {
		p.stopFetching()
	}
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
	return errors.Join(errs...)
}

// publish sends a signal if there is a bus; a lost signal only delays work until a poll.
func (c *Client) publish(ctx context.Context, channel, payload string) {
	if c.cfg.Bus == nil {
		return
	}
	if err := c.cfg.Bus.Publish(ctx, channel, []byte(payload)); err != nil && ctx.Err() == nil {
		c.log.Debug("jobs: signal not sent; a poll finds the work", "channel", channel, "err", err)
	}
}

func (c *Client) wakeQueues(ctx context.Context, queues map[string]bool) {
	for q := range queues {
		c.wakeLocal(q, false)
		c.publish(ctx, wakeChannel, q)
	}
}

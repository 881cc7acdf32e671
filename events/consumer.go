package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twicehq/twice/partition"
	"github.com/twicehq/twice/store"
)

// Mode is how a consumer group shares events among its instances.
type Mode int

const (
	// Shared hands each event to one instance of the group, in order per key, at least
	// once: after a crash the events since the last checkpoint are handled again.
	Shared Mode = iota
	// ExactlyOnce is Shared with the checkpoint committed in the handler's transaction:
	// effects the handler makes in that transaction happen exactly once.
	ExactlyOnce
	// Broadcast hands every event to every instance running the group, from the moment it
	// subscribes. Nothing is checkpointed: a restarted instance starts at the end of the log.
	Broadcast
)

func (m Mode) String() string {
	switch m {
	case Shared:
		return "shared"
	case ExactlyOnce:
		return "exactly-once"
	case Broadcast:
		return "broadcast"
	}
	return "Mode(" + strconv.Itoa(int(m)) + ")"
}

// Defaults of [GroupConfig].
const (
	DefaultPartitions   = 8
	DefaultBatchSize    = 100
	DefaultMaxAttempts  = 10
	DefaultRetryBackoff = 100 * time.Millisecond
	DefaultRebalance    = time.Second
	// DefaultMaxBatchBytes is the default [GroupConfig].MaxBatchBytes: 4 MiB.
	DefaultMaxBatchBytes = 4 << 20
	// DefaultMaxBytes is the default [GroupConfig].MaxBytes: 32 MiB.
	DefaultMaxBytes = 32 << 20
	// MaxPartitions is the most partitions a group may have.
	MaxPartitions = 1024
	// MaxGroupName is the longest group name, in bytes.
	MaxGroupName = 128
	// MaxTopics is the most topics one group may read.
	MaxTopics = 64
)

// maxRetryBackoff caps the pause between two attempts at one event.
const maxRetryBackoff = 30 * time.Second

// GroupConfig configures a consumer group on one instance. Every instance of a Shared or
// ExactlyOnce group must give the same Name, Topics, Mode and Partitions.
type GroupConfig struct {
	// Name identifies the group; its checkpoints and dead letters are kept under it.
	// Required, at most [MaxGroupName] bytes.
	Name string
	// Topics are the topics the group reads. Required, at most [MaxTopics].
	Topics []string
	// Mode is how the group's instances share events. Defaults to [Shared].
	Mode Mode
	// Handle handles one event (Shared and Broadcast). An error (or a panic) retries the
	// event after RetryBackoff; after MaxAttempts a Shared group records it in the dead
	// letters and moves on (a Broadcast group logs it and moves on). ctx ends when this
	// instance loses the event's partition.
	Handle func(ctx context.Context, e Event) error
	// HandleBatch, instead of Handle (Shared only), handles consecutive events of one
	// partition at once; an error retries the whole batch.
	HandleBatch func(ctx context.Context, evs []Event) error
	// HandleTx handles one event in tx (ExactlyOnce only, and required there); the
	// group's checkpoint commits in the same transaction. Make every effect through tx; on
	// SQLite, never use the store directly inside it (its one writer is tx).
	HandleTx func(ctx context.Context, tx store.Tx, e Event) error
	// Partitions spreads keys over this many partitions, the unit of parallelism across
	// instances. Fixed when the group is first created. Defaults to [DefaultPartitions].
	Partitions int
	// BatchSize is how many events a partition reads at once. Defaults to
	// [DefaultBatchSize].
	BatchSize int
	// MaxBatchBytes bounds the payload and header bytes of one read of a partition: the
	// read stops before the event that would pass it, but always takes at least one event,
	// so an event larger than this is still handled, alone. Defaults to
	// [DefaultMaxBatchBytes] (4 MiB).
	MaxBatchBytes int
	// MaxBytes bounds the bytes this instance's reads of the group hold at once, over all
	// its partitions: each read takes MaxBatchBytes of it until its events are handled, so
	// a read waits while the others hold the rest. Only an event larger than
	// MaxBatchBytes (a Config.MaxPayload above it) can take the group past it. Defaults to
	// [DefaultMaxBytes] (32 MiB), or MaxBatchBytes if that is larger.
	MaxBytes int
	// MaxAttempts is how often an event is tried before it is dead-lettered. Negative
	// retries forever. Defaults to [DefaultMaxAttempts].
	MaxAttempts int
	// RetryBackoff is the pause after the first failed attempt; it doubles with every
	// further one, up to 30 s. Defaults to [DefaultRetryBackoff].
	RetryBackoff time.Duration
	// StartAtEnd makes a new Shared or ExactlyOnce group skip the events already in the log.
	// Defaults to false: a new group reads the log from the beginning.
	StartAtEnd bool
	// Rebalance is how often an instance looks whether it holds its share of the
	// partitions while the bus cannot vouch for its delivery (block.Deps.Backstop applies
	// while it can); releases and joins by other instances, and deaths the cluster finds,
	// wake it at once. Defaults to [DefaultRebalance].
	Rebalance time.Duration
}

func (c *GroupConfig) withDefaults() error {
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitions
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = DefaultRetryBackoff
	}
	if c.Rebalance == 0 {
		c.Rebalance = DefaultRebalance
	}
	if c.MaxBatchBytes == 0 {
		c.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = max(DefaultMaxBytes, c.MaxBatchBytes)
	}
	var errs []error
	if c.Name == "" || len(c.Name) > MaxGroupName || strings.ContainsAny(c.Name, "/\x00\n") {
		errs = append(errs, fmt.Errorf("group Name %q must be 1 to %d bytes without '/', newline or NUL", c.Name, MaxGroupName))
	}
	if len(c.Topics) == 0 || len(c.Topics) > MaxTopics {
		errs = append(errs, fmt.Errorf("need 1 to %d Topics, not %d", MaxTopics, len(c.Topics)))
	}
	for _, t := range c.Topics {
		if t == "" || len(t) > MaxTopic {
			errs = append(errs, fmt.Errorf("topic %q must be 1 to %d bytes", t, MaxTopic))
		}
	}
	handlers := 0
	for _, set := range []bool{c.Handle != nil, c.HandleBatch != nil, c.HandleTx != nil} {
		if set {
			handlers++
		}
	}
	switch {
	case handlers != 1:
		errs = append(errs, errors.New("set exactly one of Handle, HandleBatch and HandleTx"))
	case c.Mode == ExactlyOnce && c.HandleTx == nil:
		errs = append(errs, errors.New("an ExactlyOnce group needs HandleTx"))
	case c.Mode != ExactlyOnce && c.HandleTx != nil:
		errs = append(errs, errors.New("HandleTx needs Mode ExactlyOnce"))
	case c.Mode == Broadcast && c.HandleBatch != nil:
		errs = append(errs, errors.New("HandleBatch needs Mode Shared"))
	case c.Mode < Shared || c.Mode > Broadcast:
		errs = append(errs, fmt.Errorf("unknown Mode %d", int(c.Mode)))
	}
	if c.Partitions < 1 || c.Partitions > MaxPartitions {
		errs = append(errs, fmt.Errorf("Partitions %d must be 1 to %d", c.Partitions, MaxPartitions))
	}
	if c.BatchSize < 1 || c.BatchSize > MaxBatch {
		errs = append(errs, fmt.Errorf("BatchSize %d must be 1 to %d", c.BatchSize, MaxBatch))
	}
	if c.MaxBatchBytes < 1 || c.MaxBytes < c.MaxBatchBytes {
		errs = append(errs, fmt.Errorf("MaxBatchBytes %d must be positive and MaxBytes %d at least as large", c.MaxBatchBytes, c.MaxBytes))
	}
	if c.RetryBackoff < 0 || c.Rebalance < 10*time.Millisecond {
		errs = append(errs, errors.New("RetryBackoff must be positive and Rebalance at least 10ms"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("events: invalid GroupConfig: %w", errors.Join(errs...))
	}
	return nil
}

// Consumer is this instance's part of a consumer group. Close it to hand its partitions to
// the group's other instances.
type Consumer struct {
	l         *Log
	cfg       GroupConfig
	topicArg  any
	read      string
	readBatch string       // the reads of several partitions in one statement; "" on SQLite
	batch     *readBatcher // merges the partitions' reads and checkpoints; nil on SQLite and for Broadcast
	wake      signal       // Broadcast's reader, and every partition's at once with kickAll
	parts     []signal     // each partition's reader (Shared and ExactlyOnce)
	replays   atomic.Int64 // replay signals received: a worker that saw fewer reloads its checkpoint
	unreg     func()
	mem       *byteBudget // the bytes this instance's reads of the group may hold

	hardCtx    context.Context // ends when Close gives up waiting, or at Abandon: cancels every handler
	hardCancel context.CancelFunc
	abandoned  atomic.Bool    // Abandon stopped it: nothing more is committed, dead-lettered or released
	wg         sync.WaitGroup // workers
	set        *partition.Set // this instance's share of the partitions; nil for Broadcast

	mu      sync.Mutex // protects workers
	workers map[int]*worker

	closeOnce sync.Once
	closeErr  error
}

// woken wakes the readers of the partitions that hold hashes: every reader if hashes is nil.
func (c *Consumer) woken(hashes []int64) {
	if hashes == nil || c.parts == nil {
		c.kickAll()
		return
	}
	for _, h := range hashes {
		c.parts[h%int64(len(c.parts))].kick()
	}
}

// kickAll wakes every reader of the group on this instance.
func (c *Consumer) kickAll() {
	c.wake.kick()
	for i := range c.parts {
		c.parts[i].kick()
	}
}

// wakeOf is the signal the reader of partition part waits on (-1 for Broadcast's).
func (c *Consumer) wakeOf(part int) *signal {
	if part < 0 {
		return &c.wake
	}
	return &c.parts[part]
}

// Subscribe starts this instance's part of the consumer group cfg. For Shared and
// ExactlyOnce groups it creates the group's checkpoints on first use and checks that the
// group's topics, mode and partitions have not changed.
func (l *Log) Subscribe(ctx context.Context, cfg GroupConfig) (*Consumer, error) {
	if err := cfg.withDefaults(); err != nil {
		return nil, err
	}
	if cfg.Mode != Broadcast && l.parts == nil {
		return nil, errors.New("events: a Shared or ExactlyOnce group needs Config.Leases")
	}
	c := &Consumer{l: l, cfg: cfg, workers: map[int]*worker{}, mem: newByteBudget(cfg.MaxBytes),
		read:      withTopics(l.s, l.q.read, "topic", len(cfg.Topics)),
		readBatch: withTopics(l.s, l.q.readBatch, "topic", len(cfg.Topics)),
		topicArg:  topicArg(l.s, cfg.Topics),
	}
	c.hardCtx, c.hardCancel = context.WithCancel(context.Background())
	// Made before the consumer is registered: a replay signal reaches every registered
	// consumer's readers from the bus's goroutine.
	if cfg.Mode != Broadcast {
		c.parts = make([]signal, cfg.Partitions)
		if c.readBatch != "" {
			c.batch = &readBatcher{c: c}
		}
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		c.hardCancel()
		return nil, ErrClosed
	}
	l.consumers[c] = struct{}{}
	l.mu.Unlock()
	c.unreg = l.wake.register(cfg.Topics, c.woken)

	if cfg.Mode == Broadcast {
		start, snap, err := l.end(ctx)
		if err != nil {
			c.abort()
			return nil, err
		}
		w := c.newWorker(c.hardCtx, -1)
		w.pos, w.skipVisible = start, snap
		c.wg.Add(1)
		go w.run()
		c.workers[-1] = w
		return c, nil
	}
	if err := c.ensureGroup(ctx); err != nil {
		c.abort()
		return nil, err
	}
	// The group's partitions are a partition set: at most ceil(partitions/n) per member,
	// handed over at once when one joins or leaves, and taken over when one dies.
	set, err := l.parts.Join(ctx, partition.Config{Name: cfg.Name, Partitions: cfg.Partitions, Rebalance: cfg.Rebalance,
		OnAssigned: c.assigned, OnRevoked: c.revoked})
	if err != nil {
		c.abort()
		return nil, fmt.Errorf("events: join group %q: %w", cfg.Name, err)
	}
	c.set = set
	return c, nil
}

func (c *Consumer) abort() {
	c.hardCancel()
	c.unreg()
	c.l.mu.Lock()
	delete(c.l.consumers, c)
	c.l.mu.Unlock()
}

// Name is the group's name.
func (c *Consumer) Name() string { return c.cfg.Name }

// ensureGroup records the group and its checkpoints on first use, and refuses a group
// whose definition changed.
func (c *Consumer) ensureGroup(ctx context.Context) error {
	l, cfg := c.l, c.cfg
	start := position{}
	if cfg.StartAtEnd {
		var err error
		if start, _, err = l.end(ctx); err != nil {
			return err
		}
	}
	topics, _ := json.Marshal(cfg.Topics)
	return l.s.InTx(ctx, func(tx store.Tx) error {
		if _, err := tx.Exec(ctx, l.q.ensureGroup, l.s.NowArg(), l.d.Service, cfg.Name, string(topics), cfg.Partitions, cfg.Mode.String()); err != nil {
			return fmt.Errorf("events: create group %q: %w", cfg.Name, err)
		}
		var have string
		var parts int
		var mode string
		if err := tx.QueryRow(ctx, l.q.group, l.d.Service, cfg.Name).Scan(&have, &parts, &mode); err != nil {
			return fmt.Errorf("events: group %q: %w", cfg.Name, err)
		}
		if have != string(topics) || parts != cfg.Partitions || mode != cfg.Mode.String() {
			return fmt.Errorf("events: group %q exists with topics %s, %d partitions, mode %s; this instance asks for %s, %d, %s: "+
				"a group's definition cannot change (use a new group name, and Replay it if it must see old events)",
				cfg.Name, have, parts, mode, topics, cfg.Partitions, cfg.Mode)
		}
		for p := range cfg.Partitions {
			if _, err := tx.Exec(ctx, l.q.ensureOffset, l.s.NowArg(), l.d.Service, cfg.Name, p, start.xid, start.id); err != nil {
				return fmt.Errorf("events: group %q: %w", cfg.Name, err)
			}
		}
		return nil
	})
}

// assigned starts the reader of a partition this instance took. Its handlers' context ends
// with the assignment, or when the consumer stops waiting for them.
func (c *Consumer) assigned(_ context.Context, a *partition.Assignment) {
	p := a.Partition()
	c.l.log.Debug("events: took a partition", "group", c.cfg.Name, "partition", p, "token", a.Token())
	ctx, cancel := context.WithCancel(a.Context())
	stop := context.AfterFunc(c.hardCtx, cancel)
	w := c.newWorker(ctx, p)
	w.cancel = cancel
	c.mu.Lock()
	c.workers[p] = w
	c.mu.Unlock()
	c.wg.Add(1)
	if !a.Go(func(context.Context) { w.run(); stop(); cancel() }) {
		c.wg.Done()
		close(w.done)
	}
}

// revoked lets the reader of a partition that leaves this instance finish the event in hand
// and commit; when ctx ends first (the lease lost, or Close out of time), its handlers are
// cancelled. The partition set gives the partition back once the reader has stopped.
func (c *Consumer) revoked(ctx context.Context, a *partition.Assignment) {
	c.mu.Lock()
	w := c.workers[a.Partition()]
	delete(c.workers, a.Partition())
	c.mu.Unlock()
	if w == nil {
		return
	}
	c.l.log.Debug("events: handing a partition over", "group", c.cfg.Name, "partition", a.Partition())
	w.stop()
	select {
	case <-w.done:
	case <-ctx.Done():
		w.cancel()
		<-w.done
	}
}

// Partitions lists the partitions this instance handles now; nil for Broadcast.
func (c *Consumer) Partitions() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int
	for p, w := range c.workers {
		if p >= 0 && !w.finished() {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// Close stops the consumer: each partition finishes the event in hand and commits, then is
// released for the group's other instances. ctx bounds the wait; when it ends, handlers are
// cancelled.
func (c *Consumer) Close(ctx context.Context) error {
	c.closeOnce.Do(func() {
		c.unreg()
		var err error
		if c.set != nil {
			err = c.set.Close(ctx)
		}
		c.halt()
		select {
		case <-c.stopped():
		case <-ctx.Done():
			c.hardCancel()
			<-c.stopped()
			err = ctx.Err()
		}
		c.hardCancel()
		if err != nil {
			c.closeErr = fmt.Errorf("events: group %q closed before its handlers finished: %w", c.cfg.Name, err)
		}
		c.forget()
	})
	return c.closeErr
}

// abandon stops the consumer as a crash would: its handlers are cancelled at once, and
// nothing more is committed, dead-lettered or released, so the events since each
// partition's checkpoint are handled again by the instance that takes it over once its
// lease ends. It waits, until ctx ends, for the handlers to return.
func (c *Consumer) abandon(ctx context.Context) {
	c.closeOnce.Do(func() {
		c.abandoned.Store(true)
		c.hardCancel()
		c.unreg()
		if c.set != nil {
			c.set.Abandon(ctx)
		}
		c.halt()
		select {
		case <-c.stopped():
		case <-ctx.Done():
		}
		c.forget()
	})
}

// halt tells every worker left (Broadcast's, or a partition's the set did not revoke) to
// stop after the event in hand.
func (c *Consumer) halt() {
	c.mu.Lock()
	ws := make([]*worker, 0, len(c.workers))
	for _, w := range c.workers {
		ws = append(ws, w)
	}
	c.workers = map[int]*worker{}
	c.mu.Unlock()
	for _, w := range ws {
		w.stop()
	}
}

// stopped is closed once every worker has ended.
func (c *Consumer) stopped() <-chan struct{} {
	done := make(chan struct{})
	go func() {
		c.wg.Wait()
		close(done)
	}()
	return done
}

// forget removes the consumer from its log.
func (c *Consumer) forget() {
	c.l.mu.Lock()
	delete(c.l.consumers, c)
	c.l.mu.Unlock()
}

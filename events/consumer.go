package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/lease"
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
	died      atomic.Int64 // when the cluster last found an instance dead, in Unix nanoseconds
	unreg     func()
	mem       *byteBudget // the bytes this instance's reads of the group may hold

	hardCtx    context.Context // ends when Close gives up waiting, or at Abandon: cancels every handler
	hardCancel context.CancelFunc
	abandoned  atomic.Bool    // Abandon stopped it: nothing more is committed, dead-lettered or released
	wg         sync.WaitGroup // workers, and the balancer's lease watch

	mu       sync.Mutex // protects workers, member, balancer, closing
	workers  map[int]*worker
	member   *lease.Lease
	balancer *loop.Loop // keeps this instance's share; nil for Broadcast and after Close
	closing  bool       // Close has begun: no balancer starts

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
	if cfg.Mode != Broadcast && l.d.Leases == nil {
		return nil, errors.New("events: a Shared or ExactlyOnce group needs Config.Leases")
	}
	c := &Consumer{l: l, cfg: cfg, workers: map[int]*worker{}, mem: newByteBudget(cfg.MaxBytes),
		read:      withTopics(l.s, l.q.read, "topic", len(cfg.Topics)),
		readBatch: withTopics(l.s, l.q.readBatch, "topic", len(cfg.Topics)),
		topicArg:  topicArg(l.s, cfg.Topics),
	}
	c.hardCtx, c.hardCancel = context.WithCancel(context.Background())
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		c.hardCancel()
		return nil, ErrClosed
	}
	l.consumers[c] = struct{}{}
	l.mu.Unlock()
	if cfg.Mode != Broadcast {
		c.parts = make([]signal, cfg.Partitions)
		if c.readBatch != "" {
			c.batch = &readBatcher{c: c}
		}
	}
	c.unreg = l.wake.register(cfg.Topics, c.woken)

	if cfg.Mode == Broadcast {
		start, snap, err := l.end(ctx)
		if err != nil {
			c.abort()
			return nil, err
		}
		w := c.newWorker(c.hardCtx, -1, nil)
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
	var err error
	c.member, err = l.d.Leases.TryAcquire(ctx, c.leaseName("m/"+l.d.Instance), nil)
	if err != nil {
		c.abort()
		return nil, fmt.Errorf("events: join group %q: %w", cfg.Name, err)
	}
	c.balance()
	c.announceJoin(ctx)
	return c, nil
}

// announceJoin tells the group's members on every instance that this one joined, so that
// they give up their extra partitions now rather than at their next look.
func (c *Consumer) announceJoin(ctx context.Context) {
	b := c.l.d.Bus
	if b == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), loop.SignalTimeout)
	defer cancel()
	if err := b.Publish(ctx, GroupChannel, []byte(c.cfg.Name)); err != nil {
		c.l.log.Debug("events: announcing a join failed; the members rebalance at their next look", "group", c.cfg.Name, "err", err)
	}
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

func (c *Consumer) leaseName(suffix string) string { return "events/" + c.cfg.Name + "/" + suffix }

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

// balance starts the loop that keeps this instance's share of the partitions: with n live
// members each holds at most ceil(partitions/n), taking free partitions and releasing extra
// ones. It rebalances at once; when a lease is released here or anywhere (announced); when
// a member joins (announced on GroupChannel); when the cluster finds an instance dead; when
// a worker ends on its own (its lease was lost); and every Rebalance (Backstop while the
// bus vouches for its delivery), which finds what a lost signal hid.
func (c *Consumer) balance() {
	c.mu.Lock()
	if c.closing { // the Log closed while Subscribe ran
		c.mu.Unlock()
		return
	}
	b := loop.StartAfter(loop.Forever, func(ctx context.Context) time.Duration {
		expiry, err := c.rebalance(ctx)
		if err != nil {
			if ctx.Err() == nil {
				c.l.log.Warn("events: rebalancing failed", "group", c.cfg.Name, "err", err)
			}
			return c.cfg.Rebalance
		}
		wait := c.l.d.Poll(c.cfg.Rebalance)
		if died := c.died.Load(); died != 0 && time.Since(time.Unix(0, died)) < c.l.d.Leases.TTL() && expiry > 0 {
			// An instance died lately, and may have been found dead before its leases
			// ran out (DeadAfter shorter than the lease TTL): look again when the next
			// lease held by another runs out, until a TTL has passed.
			wait = min(wait, expiry+time.Millisecond)
		}
		return wait
	})
	c.balancer = b
	c.mu.Unlock()
	// Each change is watched from before the round it starts: the next channel is taken
	// before the kick, so a change during that round closes it and starts another. (Taken
	// after the kick, a change between the two was missed, and with a Backstop the balancer
	// then slept until the next signal: CI saw a partition left without a reader.)
	changed := c.l.d.Leases.Changed()
	b.Kick()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for {
			select {
			case <-b.Stopping():
				return
			case <-changed:
				changed = c.l.d.Leases.Changed()
				b.Kick()
			}
		}
	}()
}

// kickBalancer makes the balancer rebalance now.
func (c *Consumer) kickBalancer() {
	c.mu.Lock()
	b := c.balancer
	c.mu.Unlock()
	if b != nil {
		b.Kick()
	}
}

// rebalance takes or gives up partitions to keep this instance's share. It returns how long
// until the first of the group's leases held by another instance runs out.
func (c *Consumer) rebalance(ctx context.Context) (time.Duration, error) {
	leases := c.l.d.Leases
	c.mu.Lock()
	for p, w := range c.workers {
		if w.finished() {
			delete(c.workers, p)
		}
	}
	member := c.member
	c.mu.Unlock()
	if !member.Valid() {
		m, err := leases.TryAcquire(ctx, c.leaseName("m/"+c.l.d.Instance), nil)
		if err != nil {
			return 0, fmt.Errorf("rejoin: %w", err)
		}
		c.mu.Lock()
		c.member = m
		c.mu.Unlock()
		c.announceJoin(ctx)
	}
	members, err := leases.List(ctx, c.leaseName("m/"))
	if err != nil {
		return 0, err
	}
	held, err := leases.List(ctx, c.leaseName("p/"))
	if err != nil {
		return 0, err
	}
	var expiry time.Duration
	for _, i := range slices.Concat(members, held) {
		if i.Holder != leases.Holder() && (expiry == 0 || i.Remaining < expiry) {
			expiry = i.Remaining
		}
	}
	taken := map[int]bool{}
	for _, h := range held {
		if p, err := strconv.Atoi(h.Name[len(c.leaseName("p/")):]); err == nil {
			taken[p] = true
		}
	}
	P := c.cfg.Partitions
	want := (P + max(1, len(members)) - 1) / max(1, len(members))

	c.mu.Lock()
	mine := make([]int, 0, len(c.workers))
	for p := range c.workers {
		mine = append(mine, p)
	}
	c.mu.Unlock()
	slices.Sort(mine)
	// Give back the extra partitions farthest from where this instance starts, so that
	// instances prefer different partitions and the hand-over is stable.
	first := c.firstPartition()
	slices.SortFunc(mine, func(a, b int) int { return (a-first+P)%P - (b-first+P)%P })
	for len(mine) > want {
		p := mine[len(mine)-1]
		mine = mine[:len(mine)-1]
		c.stopWorker(p)
	}
	for i := 0; i < P && len(mine) < want; i++ {
		p := (first + i) % P
		if taken[p] || slices.Contains(mine, p) {
			continue
		}
		l, err := leases.TryAcquire(ctx, c.leaseName("p/"+strconv.Itoa(p)), nil)
		if errors.Is(err, lease.ErrHeld) {
			continue
		}
		if err != nil {
			return 0, err
		}
		c.startWorker(p, l)
		mine = append(mine, p)
	}
	return expiry, nil
}

func (c *Consumer) firstPartition() int {
	h := fnv.New32a()
	h.Write([]byte(c.l.d.Instance))
	return int(h.Sum32() % uint32(c.cfg.Partitions))
}

func (c *Consumer) startWorker(p int, l *lease.Lease) {
	c.l.log.Debug("events: took a partition", "group", c.cfg.Name, "partition", p, "token", l.Token())
	// The handlers' context ends with the partition's lease, or when the consumer stops
	// waiting for them.
	ctx, cancel := context.WithCancel(l.Context())
	stop := context.AfterFunc(c.hardCtx, cancel)
	w := c.newWorker(ctx, p, l)
	c.mu.Lock()
	c.workers[p] = w
	c.mu.Unlock()
	c.wg.Add(1)
	go func() {
		w.run()
		stop()
		cancel()
		c.kickBalancer()
	}()
}

// stopWorker lets partition p's worker finish its current event and commit, then releases
// the partition so another instance takes it at once.
func (c *Consumer) stopWorker(p int) {
	c.mu.Lock()
	w := c.workers[p]
	delete(c.workers, p)
	c.mu.Unlock()
	if w == nil {
		return
	}
	c.l.log.Debug("events: handing a partition over", "group", c.cfg.Name, "partition", p)
	close(w.quit)
	<-w.done
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
		ws := c.halt()
		done := c.stopped()
		select {
		case <-done:
		case <-ctx.Done():
			c.hardCancel()
			for _, w := range ws {
				if w.lease != nil {
					_ = w.lease.Release(context.WithoutCancel(ctx)) // it expires anyway
				}
			}
			<-done
			c.closeErr = fmt.Errorf("events: group %q closed before its handlers finished: %w", c.cfg.Name, ctx.Err())
		}
		c.hardCancel()
		if c.member != nil {
			if err := c.member.Release(context.WithoutCancel(ctx)); err != nil {
				c.l.log.Debug("events: leaving the group; the membership expires by itself", "group", c.cfg.Name, "err", err)
			}
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
		c.halt()
		select {
		case <-c.stopped():
		case <-ctx.Done():
		}
		c.forget()
	})
}

// halt stops the balancer, so that no worker starts from here on, and tells every worker
// to stop after the event in hand. It returns the workers.
func (c *Consumer) halt() []*worker {
	c.unreg()
	c.mu.Lock()
	b := c.balancer
	c.balancer, c.closing = nil, true
	c.mu.Unlock()
	if b != nil {
		b.Stop()
	}
	c.mu.Lock()
	ws := make([]*worker, 0, len(c.workers))
	for _, w := range c.workers {
		ws = append(ws, w)
	}
	c.workers = map[int]*worker{}
	c.mu.Unlock()
	for _, w := range ws {
		close(w.quit)
	}
	return ws
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

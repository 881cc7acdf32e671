package twice

import (
	"context"
	"errors"
	"path"
	"reflect"
	"slices"
	"sync"

	"github.com/twicehq/twice/cache"
	"github.com/twicehq/twice/cron"
	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/idempotency"
	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/internal/loop"
	"github.com/twicehq/twice/jobs"
	"github.com/twicehq/twice/partition"
	"github.com/twicehq/twice/presence"
	"github.com/twicehq/twice/realtime"
	"github.com/twicehq/twice/session"
	"github.com/twicehq/twice/settings"
	"github.com/twicehq/twice/workflow"
)

// blocks are the node's building blocks. Each is made at Open, which checks its Config and
// starts nothing; it starts the first time the application uses it (its accessor on the
// Node), so a service pays only for the blocks it uses. See internal/block for the
// contract and docs/ARCHITECTURE.md for how to add a block.
type blocks struct {
	jobs     slot[*jobs.Client]
	cron     slot[*cron.Cron]
	events   slot[*events.Log]
	caches   slot[*cache.Manager]
	settings slot[*settings.Settings]
	sessions slot[*session.Sessions]
	idem     slot[*idempotency.Keys]
	parts    slot[*partition.Manager]
	presence slot[*presence.Presence]
	realtime slot[*realtime.Hub]
	flows    slot[*workflow.Engine]

	made    []block.Block // every block, in the order made
	mu      sync.Mutex    // protects started, closed
	started []block.Block // in the order first used
	closed  bool
}

// build makes every block from the node's dependencies and its Config: one line per block.
func (n *Node) build() error {
	d, c := n.deps(), n.cfg
	return errors.Join(
		n.blocks.jobs.make(n, func() (*jobs.Client, error) { return jobs.New(d, c.Jobs) }),
		n.blocks.cron.make(n, func() (*cron.Cron, error) { return cron.New(d, n.blocks.jobs.b, c.Cron) }),
		n.blocks.events.make(n, func() (*events.Log, error) { return events.New(d, c.Events) }),
		n.blocks.caches.make(n, func() (*cache.Manager, error) { return cache.NewManager(d, c.Caches) }),
		n.blocks.settings.make(n, func() (*settings.Settings, error) { return settings.New(d, c.Settings) }),
		n.blocks.sessions.make(n, func() (*session.Sessions, error) { return session.New(d, c.Sessions) }),
		n.blocks.idem.make(n, func() (*idempotency.Keys, error) { return idempotency.New(d, c.idempotency()) }),
		n.blocks.parts.make(n, func() (*partition.Manager, error) { return partition.New(d) }),
		n.blocks.presence.make(n, func() (*presence.Presence, error) { return presence.New(d, c.Presence) }),
		n.blocks.realtime.make(n, func() (*realtime.Hub, error) { return realtime.New(d, n.Presence, c.Realtime) }),
		n.blocks.flows.make(n, func() (*workflow.Engine, error) { return workflow.New(d, n.blocks.jobs.b, c.Workflows) }),
	)
}

// deps are what every block of this node is given.
func (n *Node) deps() block.Deps {
	return block.Deps{Store: n.store, Bus: n.bus, Leases: n.leases, Members: n.members, Service: n.cfg.Name,
		Instance: n.cfg.InstanceID, Logger: n.log, Panics: &n.panics, Backstop: n.cfg.Backstop, Signed: n.signer != nil && n.bus != nil, Tracer: n.tracer}
}

// slot holds one block and starts it on first use.
type slot[B block.Block] struct {
	b    B
	once sync.Once
}

func (s *slot[B]) make(n *Node, fn func() (B, error)) error {
	b, err := fn()
	if err == nil {
		s.b = b
		n.blocks.made = append(n.blocks.made, b)
	}
	return err
}

// use returns the block, started: the first call starts it and, if it has leader upkeep,
// runs that whenever this instance leads.
func (s *slot[B]) use(n *Node) B {
	s.once.Do(func() { n.startBlock(s.b) })
	return s.b
}

// startBlock starts b, unless the node is closing. A block whose Start fails is logged and left
// unstarted: its own calls report what is wrong.
func (n *Node) startBlock(b block.Block) {
	n.blocks.mu.Lock()
	defer n.blocks.mu.Unlock()
	if n.blocks.closed {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), loop.StatementTimeout)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		n.log.Error("twice: a building block did not start", "block", blockName(b), "err", err)
		return
	}
	n.blocks.started = append(n.blocks.started, b)
	if l, ok := b.(block.Leader); ok {
		n.leader.OnElected(l.Lead)
	}
}

// closeBlocks closes every block (see endBlocks).
func (n *Node) closeBlocks(ctx context.Context) error {
	return n.endBlocks(func(b block.Block) error { return b.Close(ctx) })
}

// abandonBlocks abandons every block, as a crash would (see block.Block.Abandon and
// endBlocks).
func (n *Node) abandonBlocks(ctx context.Context) {
	_ = n.endBlocks(func(b block.Block) error { b.Abandon(ctx); return nil })
}

// endBlocks ends the started blocks with end, newest first, then the others (a block can
// be used through another without being started itself, as cron enqueues through jobs);
// no block starts after it.
func (n *Node) endBlocks(end func(block.Block) error) error {
	n.blocks.mu.Lock()
	n.blocks.closed = true
	started := n.blocks.started
	n.blocks.mu.Unlock()
	var errs []error
	for i := len(started) - 1; i >= 0; i-- {
		if err := end(started[i]); err != nil {
			errs = append(errs, err)
		}
	}
	for _, b := range n.blocks.made {
		if !slices.Contains(started, b) {
			if err := end(b); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// blockName names a block in logs by its package.
func blockName(b block.Block) string {
	t := reflect.TypeOf(b)
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return path.Base(t.PkgPath())
}

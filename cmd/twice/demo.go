package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/lease"
	"github.com/twicehq/twice/store"
)

// demoCmd is `twice demo`: the demo shop (demo_shop.go) by default, or with --scenario
// leader the scripted tour of leader failover below.
func demoCmd(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	var db dbFlags
	db.register(fs)
	scenario := fs.String("scenario", "shop", "shop: the demo shop, three instances behind a proxy; leader: a scripted tour of leader failover")
	var shop shopFlags
	shop.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	switch *scenario {
	case "shop":
		return demoShop(ctx, &db, shop, stdout)
	case "leader":
		if shop.set(fs) {
			return fmt.Errorf("%w: demo: --for, --port and --chaos are for the shop, not --scenario leader", errUsage)
		}
		return demoLeader(ctx, &db, stdout)
	}
	return fmt.Errorf("%w: demo: --scenario %q: want shop or leader", errUsage, *scenario)
}

// demoLeader starts three real instance processes on one database and shows, in order: an
// election, a crash of the leader, a leader paused past its lease whose stale write is
// refused, and a graceful handover. It checks every accepted write at the end.
func demoLeader(ctx context.Context, db *dbFlags, stdout io.Writer) error {
	s, dsn, cleanup, err := openScratch(ctx, db, "demo")
	if err != nil {
		return err
	}
	defer cleanup()
	// The leaders' fenced writes go to a table of the workloads'.
	if _, err := store.NewMigrator(s, instance.Component()).Up(ctx); err != nil {
		return err
	}
	service := "demo-" + randHex(2)
	defer forgetService(s, service, instance.Components()...)
	spawn, err := instance.Self("__instance")
	if err != nil {
		return err
	}
	ttl := lease.DefaultTTL
	g := instance.NewGroup(spawn, instance.Options{DSN: dsn, Schema: db.schema, Service: service, Workloads: []instance.Workload{instance.FencedWriter{}}}, nil)
	defer g.Stop(10 * time.Second)
	d := &demo{ctx: ctx, out: stdout, g: g, s: s, service: service}

	fmt.Fprintf(stdout, "twice demo: service %q on %s\n", service, s)
	fmt.Fprintln(stdout, "Each instance is a real process. The leader writes a row every 5 ms, each write fenced by its token.")

	d.step("start three instances")
	for i := range 3 {
		p, err := g.Start(ctx, i)
		if err != nil {
			return err
		}
		d.say("instance %s ready", p.ID)
	}
	leader, err := d.leader(0)
	if err != nil {
		return err
	}
	d.say("%s leads with fencing token %d", leader.ID, leader.Token)
	if err := d.status(); err != nil {
		return err
	}

	d.step("kill -9 the leader: no goodbye, so its lease has to run out (TTL %v)", ttl)
	if leader, err = d.disrupt(leader, syscall.SIGKILL, 0); err != nil {
		return err
	}

	d.step("freeze the leader with SIGSTOP for %v, longer than its lease (a GC pause, a stalled VM)", ttl+time.Second)
	paused := leader
	_, from := g.Log()
	if leader, err = d.disrupt(leader, syscall.SIGSTOP, ttl+time.Second); err != nil {
		return err
	}
	d.say("SIGCONT: %s wakes up still holding token %d and tries to write...", paused.ID, paused.Token)
	fenced, err := d.wait(from, func(e instance.Event) bool { return e.ID == paused.ID && e.Event == "fenced" })
	if err != nil {
		return err
	}
	d.say("refused: %s", fenced.Err)

	d.step("stop the leader gracefully (SIGTERM: readiness off, leadership handed over, leases released)")
	if _, err = d.disrupt(leader, syscall.SIGTERM, 0); err != nil {
		return err
	}
	if err := d.status(); err != nil {
		return err
	}

	g.Stop(10 * time.Second)
	n, terms, err := checkFencedWrites(ctx, s, service)
	if err != nil {
		return err
	}
	d.step("verdict")
	d.say("%d writes accepted across %d leader terms, every one in token order: no stale leader wrote", n, terms)
	return nil
}

type demo struct {
	ctx     context.Context
	out     io.Writer
	g       *instance.Group
	s       *store.Store
	service string
}

func (d *demo) step(format string, args ...any) {
	fmt.Fprintf(d.out, "\n▸ "+format+"\n", args...)
}

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, "  "+format+"\n", args...)
}

func (d *demo) wait(from int, match func(instance.Event) bool) (instance.Event, error) {
	ctx, cancel := context.WithTimeout(d.ctx, 30*time.Second)
	defer cancel()
	ev, _, err := d.g.WaitFor(ctx, from, match)
	return ev, err
}

// leader waits for an instance to lead, looking at events from position from on.
func (d *demo) leader(from int) (instance.Event, error) {
	if _, err := d.wait(from, func(instance.Event) bool { _, _, ok := d.g.Leader(); return ok }); err != nil {
		return instance.Event{}, err
	}
	_, ev, _ := d.g.Leader()
	return ev, nil
}

// disrupt sends sig to the leader, waits for another instance to be elected, and brings the
// old leader back: SIGCONT after pause for SIGSTOP, a new process otherwise.
func (d *demo) disrupt(leader instance.Event, sig syscall.Signal, pause time.Duration) (instance.Event, error) {
	slot := d.g.SlotOf(leader.ID)
	_, from := d.g.Log()
	t0 := time.Now()
	if err := d.g.Signal(slot, sig); err != nil {
		return leader, err
	}
	elected := func(e instance.Event) bool { return e.Event == "elected" && e.Token > leader.Token }
	if sig == syscall.SIGSTOP {
		ctx, cancel := context.WithTimeout(d.ctx, pause)
		next, _, err := d.g.WaitFor(ctx, from, elected)
		cancel()
		time.Sleep(time.Until(t0.Add(pause)))
		if cerr := d.g.Signal(slot, syscall.SIGCONT); cerr != nil {
			return leader, cerr
		}
		if err == nil {
			d.say("%s elected %.2f s later, with token %d, while the old leader was still frozen", next.ID, next.Time().Sub(t0).Seconds(), next.Token)
			return next, nil
		}
		// SQLite has one write lock per database; a process frozen inside a write
		// transaction keeps it, and nobody can take over (or write) until it resumes.
		d.say("the leader froze inside a write transaction and kept SQLite's only write lock: nobody could be elected, and nothing could go wrong")
		next, err = d.wait(from, elected)
		if err != nil {
			return leader, fmt.Errorf("no new leader: %w", err)
		}
		d.say("%s elected %.2f s after the old leader resumed, with token %d", next.ID, next.Time().Sub(t0.Add(pause)).Seconds(), next.Token)
		return next, nil
	}
	next, err := d.wait(from, elected)
	if err != nil {
		return leader, fmt.Errorf("no new leader: %w", err)
	}
	d.say("%s elected %.2f s later, with token %d", next.ID, next.Time().Sub(t0).Seconds(), next.Token)
	if p := d.g.Proc(slot); p != nil {
		for !p.Exited() {
			time.Sleep(10 * time.Millisecond)
		}
	}
	p, err := d.g.Start(d.ctx, slot)
	if err != nil {
		return next, err
	}
	d.say("restarted the stopped instance as %s, a follower", p.ID)
	return next, nil
}

func (d *demo) status() error {
	sts, err := twice.Status(d.ctx, d.s, d.service)
	if err != nil {
		return err
	}
	fmt.Fprintln(d.out)
	printStatus(d.out, d.s.String(), sts)
	return nil
}

// checkFencedWrites reads service's fenced writes in commit order and returns how many there
// are and in how many terms, or an error if a token ever went back.
func checkFencedWrites(ctx context.Context, s *store.Store, service string) (n, terms int, err error) {
	writes, err := instance.FencedWrites(ctx, s, service)
	if err != nil {
		return 0, 0, err
	}
	var last int64
	for i, w := range writes {
		if w.Token < last {
			return i, terms, fmt.Errorf("write %d carries token %d after token %d: a stale write got through", i, w.Token, last)
		}
		if w.Token != last {
			terms++
		}
		last = w.Token
	}
	return len(writes), terms, nil
}

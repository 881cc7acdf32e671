package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/twicehq/twice/internal/instance"
	"github.com/twicehq/twice/internal/report"
)

// benchRealtime runs `twice bench realtime`: messages published through the hub of one
// instance and delivered to clients on the others, what a connection costs an instance,
// and (unless --partitions 0) how fast a partition set settles after a join, a leave and a
// kill.
func benchRealtime(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench realtime", flag.ContinueOnError)
	var db dbFlags
	db.register(fs)
	busURL := fs.String("bus", "", "signal over NATS (nats://host:port) instead of the store-native bus")
	signed := fs.Bool("signed", true, "give the instances a random cluster secret, so that messages travel on the signed bus (false: the bus carries hints, and each instance reads the history)")
	instances := fs.Int("instances", 3, "instances serving the hub")
	clients := fs.Int("clients", 50, "clients per instance, all in the one room")
	messages := fs.Int("messages", 1000, "messages for the latency run, at --rate")
	rate := fs.Int("rate", 200, "messages per second in the latency run")
	burst := fs.Int("burst", 2000, "messages published as fast as the hub takes them, for throughput")
	conns := fs.Int("connections", 1000, "extra idle connections opened to one instance to measure what one costs")
	parts := fs.Int("partitions", 900, "partitions of the rebalance run (0: no rebalance run)")
	partInstances := fs.Int("partition-instances", 10, "instances of the rebalance run")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	rep := addReport(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *instances < 2 || *instances > 20:
		return fmt.Errorf("%w: bench realtime: --instances must be 2 to 20", errUsage)
	case *clients < 1 || *clients > 5000:
		return fmt.Errorf("%w: bench realtime: --clients must be 1 to 5000", errUsage)
	case *messages < 1 || *rate < 1 || *burst < 1:
		return fmt.Errorf("%w: bench realtime: --messages, --rate and --burst must be positive", errUsage)
	case *conns < 0 || *conns > 50000:
		return fmt.Errorf("%w: bench realtime: --connections must be 0 to 50000", errUsage)
	case *parts < 0 || *parts > 4096 || *parts > 0 && (*partInstances < 2 || *partInstances > 50):
		return fmt.Errorf("%w: bench realtime: --partitions must be 0 to 4096, --partition-instances 2 to 50", errUsage)
	}
	if err := rep.create(); err != nil {
		return err
	}
	defer rep.discard()
	e, err := newBenchEnv(ctx, &db, "realtime", *asJSON, stdout, stderr)
	if err != nil {
		return err
	}
	defer e.close()
	secret, over := benchBus(*busURL, *signed)
	fmt.Fprintf(e.progress, "bench realtime: %d instances of %s on %s over %s, %d clients each\n",
		*instances, e.service, e.store, over, *clients)
	opts := instance.Options{DSN: e.dsn, Schema: db.schema, Service: e.service, Bus: *busURL, ClusterSecret: secret,
		Workloads: []instance.Workload{instance.Realtime{}}}
	res, err := measureRealtime(ctx, e.spawn, opts, realtimeParams{Instances: *instances, Clients: *clients,
		Messages: *messages, Rate: *rate, Burst: *burst, Connections: *conns, Progress: e.progress})
	if err != nil {
		return err
	}
	res.Store, res.Bus = string(e.store.Dialect()), over
	if *parts > 0 {
		fmt.Fprintf(e.progress, "rebalance: %d instances sharing %d partitions\n", *partInstances, *parts)
		popts := instance.Options{DSN: e.dsn, Schema: db.schema, Service: e.service + "-p", Bus: *busURL,
			Workloads: []instance.Workload{instance.PartitionWrites{Partitions: *parts, NoWrites: true}}}
		rb, err := measureRebalance(ctx, e.spawn, popts, *partInstances, *parts, 1, e.progress)
		if err != nil {
			return err
		}
		rb.Store = res.Store
		res.Rebalance = &rb
	}
	return rep.finish(stdout, e.progress, *asJSON, res)
}

type realtimeParams struct {
	Instances, Clients, Messages, Rate, Burst, Connections int
	Progress                                               io.Writer
}

// realtimeResult is what `twice bench realtime` measures.
type realtimeResult struct {
	Store     string `json:"store"`
	Bus       string `json:"bus"`
	Instances int    `json:"instances"`
	Clients   int    `json:"clients_per_instance"`
	// P50MS and P99MS are the delivery latency from a client's publish on the first
	// instance to a client on another, over the latency run.
	P50MS float64 `json:"p50_ms"`
	P99MS float64 `json:"p99_ms"`
	MaxMS float64 `json:"max_ms"`
	// DeliveredPerSec is the messages delivered to clients, every instance's together,
	// per second of the burst (from its first publish to its last delivery).
	DeliveredPerSec float64 `json:"delivered_per_sec"`
	// ConnectionsPerInstance is what the instance measured held at the end; KBPerConnection
	// the growth of its resident memory over that many more idle connections, each in the
	// room, divided by their number.
	ConnectionsPerInstance int              `json:"connections_per_instance"`
	KBPerConnection        float64          `json:"kb_per_connection"`
	Rebalance              *rebalanceResult `json:"rebalance,omitempty"`
}

func (r realtimeResult) summary() string {
	s := fmt.Sprintf("realtime on %s over %s, %d instances × %d clients: delivery between instances p50 %.1f ms, p99 %.1f ms; %.0f deliveries/s; %d connections held by one instance at %.1f KiB each",
		r.Store, r.Bus, r.Instances, r.Clients, r.P50MS, r.P99MS, r.DeliveredPerSec, r.ConnectionsPerInstance, r.KBPerConnection)
	if r.Rebalance != nil {
		s += "\n" + r.Rebalance.summary()
	}
	return s
}

func (r realtimeResult) page() *report.Page {
	p := &report.Page{Title: fmt.Sprintf("twice bench realtime: %s, %d instances", r.Store, r.Instances), Summary: r.summary(),
		Facts: []report.Fact{{Name: "store", Value: r.Store}, {Name: "bus", Value: r.Bus},
			{Name: "clients", Value: fmt.Sprintf("%d per instance, in one room", r.Clients)}},
		Sections: []report.Section{{ID: "figures-section", Heading: "Figures", Tables: []report.Table{figures(
			figure{"delivery between instances, p50", msText(r.P50MS, 1)},
			figure{"delivery between instances, p99", msText(r.P99MS, 1)},
			figure{"delivery between instances, max", msText(r.MaxMS, 1)},
			figure{"deliveries per second (burst)", report.Format(r.DeliveredPerSec, 0)},
			figure{"connections held by one instance", strconv.Itoa(r.ConnectionsPerInstance)},
			figure{"memory per idle connection", report.Format(r.KBPerConnection, 1) + " KiB"},
		)}}}}
	if r.Rebalance != nil {
		p.Sections = append(p.Sections, r.Rebalance.page().Sections...)
	}
	return p
}

// rtConn is one benchmark client: a connection to one instance's hub, in the room.
type rtConn struct {
	ws   *websocket.Conn
	recv func(n int, at time.Time) // called for every message received
}

const benchRoom = "bench"

// dialRT connects user to the hub at addr and subscribes it to the room; recv, if set, is
// called with each message's number and when it arrived.
func dialRT(ctx context.Context, addr, user string, recv func(n int, at time.Time)) (*rtConn, error) {
	ws, _, err := websocket.Dial(ctx, "ws://"+addr+"/realtime?user="+user, nil)
	if err != nil {
		return nil, err
	}
	ws.SetReadLimit(1 << 20)
	c := &rtConn{ws: ws, recv: recv}
	if err := c.send(ctx, map[string]any{"type": "subscribe", "room": benchRoom}); err != nil {
		return nil, err
	}
	subscribed := make(chan struct{})
	go func() {
		once := sync.Once{}
		for {
			_, b, err := ws.Read(context.Background())
			if err != nil {
				return
			}
			at := time.Now()
			var f struct {
				Type string `json:"type"`
				Data struct {
					N int `json:"n"`
				} `json:"data"`
			}
			if json.Unmarshal(b, &f) != nil {
				continue
			}
			switch f.Type {
			case "subscribed":
				once.Do(func() { close(subscribed) })
			case "message":
				if c.recv != nil {
					c.recv(f.Data.N, at)
				}
			}
		}
	}()
	select {
	case <-subscribed:
		return c, nil
	case <-time.After(30 * time.Second):
		_ = ws.CloseNow()
		return nil, fmt.Errorf("bench realtime: %s was not subscribed within 30 s", user)
	case <-ctx.Done():
		_ = ws.CloseNow()
		return nil, ctx.Err()
	}
}

func (c *rtConn) send(ctx context.Context, f any) error {
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	return c.ws.Write(ctx, websocket.MessageText, b)
}

// deliveries counts, for each message number, when its deliveries arrived on the
// instances other than the publisher's.
type deliveries struct {
	mu    sync.Mutex
	sent  map[int]time.Time
	lat   []float64 // ms, one per delivery to a client on another instance
	count int       // every delivery, to any client
	last  time.Time
	gotN  map[int]int
}

func (d *deliveries) got(n int, at time.Time, remote bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.count++
	d.gotN[n]++
	if at.After(d.last) {
		d.last = at
	}
	if t, ok := d.sent[n]; ok && remote {
		d.lat = append(d.lat, ms(at.Sub(t)))
	}
}

func measureRealtime(ctx context.Context, spawn instance.Spawner, opts instance.Options, p realtimeParams) (realtimeResult, error) {
	res := realtimeResult{Instances: p.Instances, Clients: p.Clients}
	g := instance.NewGroup(spawn, opts, nil)
	defer g.Stop(10 * time.Second)
	addrs := make([]string, p.Instances)
	for i := range p.Instances {
		proc, err := g.Start(ctx, i)
		if err != nil {
			return res, err
		}
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		ev, _, err := g.WaitFor(wctx, 0, func(e instance.Event) bool { return e.Event == "http" && e.ID == proc.ID })
		cancel()
		if err != nil {
			return res, fmt.Errorf("bench realtime: instance %d serves no HTTP: %w", i, err)
		}
		addrs[i] = ev.Addr
	}
	// n numbers the messages; the latency run's come first, then the burst's.
	d := &deliveries{sent: map[int]time.Time{}, gotN: map[int]int{}}
	var all []*rtConn
	defer func() {
		for _, c := range all {
			_ = c.ws.CloseNow()
		}
	}()
	for i, addr := range addrs {
		remote := i != 0
		for k := range p.Clients {
			c, err := dialRT(ctx, addr, fmt.Sprintf("u%d-%d", i, k), func(n int, at time.Time) { d.got(n, at, remote) })
			if err != nil {
				return res, err
			}
			all = append(all, c)
		}
	}
	// Several publishers, in turn: a connection's publishes are stored one after the other,
	// each in its own transaction, so one connection alone would queue them behind the
	// commits.
	pubs := make([]*rtConn, 4)
	for i := range pubs {
		c, err := dialRT(ctx, addrs[0], fmt.Sprintf("publisher-%d", i), nil)
		if err != nil {
			return res, err
		}
		pubs[i] = c
		all = append(all, c)
	}
	publish := func(n int) error {
		d.mu.Lock()
		d.sent[n] = time.Now()
		d.mu.Unlock()
		return pubs[n%len(pubs)].send(ctx, map[string]any{"type": "publish", "room": benchRoom, "data": map[string]int{"n": n}, "id": strconv.Itoa(n)})
	}
	want := p.Instances * p.Clients
	waitAll := func(from, to int) error {
		deadline := time.Now().Add(2 * time.Minute)
		for {
			d.mu.Lock()
			done := true
			for n := from; n < to && done; n++ {
				done = d.gotN[n] >= want
			}
			d.mu.Unlock()
			if done {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("bench realtime: messages %d to %d did not reach all %d clients within 2 minutes", from, to-1, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	fmt.Fprintf(p.Progress, "latency: %d messages at %d/s from instance 0\n", p.Messages, p.Rate)
	tick := time.NewTicker(time.Second / time.Duration(p.Rate))
	for n := range p.Messages {
		<-tick.C
		if err := publish(n); err != nil {
			tick.Stop()
			return res, err
		}
	}
	tick.Stop()
	if err := waitAll(0, p.Messages); err != nil {
		return res, err
	}
	d.mu.Lock()
	res.P50MS, res.P99MS, res.MaxMS = percentile(d.lat, 50), percentile(d.lat, 99), percentile(d.lat, 100)
	before := d.count
	d.mu.Unlock()

	fmt.Fprintf(p.Progress, "throughput: %d messages as fast as the hub takes them\n", p.Burst)
	start := time.Now()
	for n := p.Messages; n < p.Messages+p.Burst; n++ {
		if err := publish(n); err != nil {
			return res, err
		}
	}
	if err := waitAll(p.Messages, p.Messages+p.Burst); err != nil {
		return res, err
	}
	d.mu.Lock()
	res.DeliveredPerSec = float64(d.count-before) / d.last.Sub(start).Seconds()
	d.mu.Unlock()

	if p.Connections > 0 {
		fmt.Fprintf(p.Progress, "memory: %d more idle connections to instance 1\n", p.Connections)
		pid := g.Proc(1).PID()
		rss0, err := residentKB(pid)
		if err != nil {
			return res, err
		}
		for k := range p.Connections {
			c, err := dialRT(ctx, addrs[1], fmt.Sprintf("idle-%d", k), nil)
			if err != nil {
				return res, err
			}
			all = append(all, c)
		}
		time.Sleep(time.Second) // let the instance settle its buffers and goroutines
		rss1, err := residentKB(pid)
		if err != nil {
			return res, err
		}
		res.KBPerConnection = float64(rss1-rss0) / float64(p.Connections)
	}
	res.ConnectionsPerInstance = p.Clients + p.Connections
	return res, nil
}

// residentKB reads a process's resident memory from /proc (Linux).
func residentKB(pid int) (int64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("bench realtime: cannot read the instance's memory: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("bench realtime: no VmRSS for process %d", pid)
}

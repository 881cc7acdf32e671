package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/events"
)

// eventsResult is what `twice bench events` measured.
type eventsResult struct {
	Store      string `json:"store"`
	Bus        string `json:"bus"`
	Publishers int    `json:"publishers"`
	Partitions int    `json:"partitions"`
	// Throughput: Events published by Publishers goroutines, one event per transaction,
	// while another instance's shared group consumes them.
	Events            int     `json:"events"`
	PublishPerSec     float64 `json:"publish_per_sec"`
	ConsumePerSec     float64 `json:"consume_per_sec"`
	ThroughputSeconds float64 `json:"throughput_seconds"`
	// Latency: LatencyEvents published at Rate per second, from before the publishing
	// transaction commits to the handler on the other instance.
	LatencyEvents int     `json:"latency_events"`
	Rate          int     `json:"rate"`
	P50MS         float64 `json:"p50_ms"`
	P99MS         float64 `json:"p99_ms"`
	MaxMS         float64 `json:"max_ms"`
}

func benchEvents(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench events", flag.ContinueOnError)
	var db dbFlags
	db.register(fs)
	busURL := fs.String("bus", "", "bus between the instances: empty for the store's own, or a NATS URL (nats://127.0.0.1:4222)")
	n := fs.Int("events", 20000, "events for the throughput run")
	publishers := fs.Int("publishers", 4, "concurrent publishers, one event per transaction")
	partitions := fs.Int("partitions", events.DefaultPartitions, "partitions of the consuming group")
	latencyN := fs.Int("latency-events", 2000, "events for the latency run")
	rate := fs.Int("rate", 200, "events per second in the latency run")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *n < 1 || *n > 10_000_000:
		return fmt.Errorf("%w: bench events: --events must be 1 to 10000000", errUsage)
	case *publishers < 1 || *publishers > 256:
		return fmt.Errorf("%w: bench events: --publishers must be 1 to 256", errUsage)
	case *partitions < 1 || *partitions > events.MaxPartitions:
		return fmt.Errorf("%w: bench events: --partitions must be 1 to %d", errUsage, events.MaxPartitions)
	case *latencyN < 1 || *latencyN > 1_000_000:
		return fmt.Errorf("%w: bench events: --latency-events must be 1 to 1000000", errUsage)
	case *rate < 1 || *rate > 100_000:
		return fmt.Errorf("%w: bench events: --rate must be 1 to 100000", errUsage)
	}
	e, err := newBenchEnv(ctx, &db, "events", *asJSON, stdout, stderr)
	if err != nil {
		return err
	}
	defer e.close()
	s, dsn, service, progress := e.store, e.dsn, e.service, e.progress
	busName := "store"
	if *busURL != "" {
		busName = "nats"
	}
	res := eventsResult{Store: string(s.Dialect()), Bus: busName, Publishers: *publishers, Partitions: *partitions,
		Events: *n, LatencyEvents: *latencyN, Rate: *rate}
	fmt.Fprintf(progress, "bench events: %s on %s, %s bus; %d events from %d publishers, then %d at %d/s\n",
		service, s, busName, *n, *publishers, *latencyN, *rate)

	quiet := slog.New(slog.DiscardHandler)
	open := func() (*twice.Node, error) {
		return twice.Open(ctx, twice.Config{DSN: dsn, Schema: db.schema, Name: service, Bus: *busURL, Logger: quiet})
	}
	pub, err := open()
	if err != nil {
		return err
	}
	defer pub.Close(context.WithoutCancel(ctx))
	sub, err := open()
	if err != nil {
		return err
	}
	defer sub.Close(context.WithoutCancel(ctx))

	b := &eventsBench{res: &res, progress: progress}
	if err := b.throughput(ctx, pub, sub); err != nil {
		return err
	}
	if err := b.latency(ctx, pub, sub); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, res)
	}
	fmt.Fprintf(stdout, "events on %s (%s bus): publish %.0f/s, consume %.0f/s (%d events, %d publishers, %d partitions); "+
		"propagation at %d/s: p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
		res.Store, res.Bus, res.PublishPerSec, res.ConsumePerSec, res.Events, res.Publishers, res.Partitions,
		res.Rate, res.P50MS, res.P99MS, res.MaxMS)
	return nil
}

type eventsBench struct {
	res      *eventsResult
	progress io.Writer
}

// throughput publishes res.Events events, one per transaction, from res.Publishers
// goroutines on pub while a shared group on sub consumes them.
func (b *eventsBench) throughput(ctx context.Context, pub, sub *twice.Node) error {
	total := b.res.Events
	var consumed, published atomic.Int64
	done := make(chan struct{})
	c, err := sub.Events().Subscribe(ctx, events.GroupConfig{Name: "throughput", Topics: []string{"bench.throughput"},
		Partitions: b.res.Partitions, Handle: func(context.Context, events.Event) error {
			if consumed.Add(1) == int64(total) {
				close(done)
			}
			return nil
		}})
	if err != nil {
		return err
	}
	defer c.Close(context.WithoutCancel(ctx))
	stopProgress := b.report(func() string {
		return fmt.Sprintf("throughput: published %d/%d, consumed %d", published.Load(), total, consumed.Load())
	})
	defer stopProgress()

	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, b.res.Publishers)
	for range b.res.Publishers {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(total) {
					return
				}
				if _, err := pub.Events().Publish(ctx, events.Message{Topic: "bench.throughput", Key: strconv.FormatInt(i%1000, 10)}); err != nil {
					errs <- err
					return
				}
				published.Add(1)
			}
		})
	}
	wg.Wait()
	pubTime := time.Since(start)
	select {
	case err := <-errs:
		return err
	default:
	}
	if err := waitDone(ctx, done, &consumed, total); err != nil {
		return err
	}
	allTime := time.Since(start)
	b.res.PublishPerSec = float64(total) / pubTime.Seconds()
	b.res.ConsumePerSec = float64(total) / allTime.Seconds()
	b.res.ThroughputSeconds = allTime.Seconds()
	return nil
}

// waitDone waits until the consumer has seen every event; it fails if the consumer makes
// no progress for a long time (a lost event would hang the benchmark otherwise).
func waitDone(ctx context.Context, done <-chan struct{}, consumed *atomic.Int64, total int) error {
	last, since := consumed.Load(), time.Now()
	for {
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if now := consumed.Load(); now != last {
			last, since = now, time.Now()
		} else if time.Since(since) > 30*time.Second {
			return fmt.Errorf("bench events: consumer stuck at %d of %d events for 30s", now, total)
		}
	}
}

// latency publishes res.LatencyEvents events at res.Rate per second, each carrying its
// publish time, and measures when sub's handler sees it.
func (b *eventsBench) latency(ctx context.Context, pub, sub *twice.Node) error {
	total := b.res.LatencyEvents
	var mu sync.Mutex
	lat := make([]float64, 0, total)
	var consumed atomic.Int64
	done := make(chan struct{})
	c, err := sub.Events().Subscribe(ctx, events.GroupConfig{Name: "latency", Topics: []string{"bench.latency"},
		Partitions: b.res.Partitions, StartAtEnd: true, Handle: func(_ context.Context, e events.Event) error {
			if len(e.Payload) != 8 {
				return errors.New("bench events: bad payload")
			}
			sent := time.Unix(0, int64(binary.BigEndian.Uint64(e.Payload)))
			mu.Lock()
			lat = append(lat, float64(time.Since(sent).Microseconds())/1000)
			mu.Unlock()
			if consumed.Add(1) == int64(total) {
				close(done)
			}
			return nil
		}})
	if err != nil {
		return err
	}
	defer c.Close(context.WithoutCancel(ctx))
	// Let the group settle on its partitions before timing.
	for len(c.Partitions()) < b.res.Partitions {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	stopProgress := b.report(func() string {
		return fmt.Sprintf("latency: consumed %d/%d", consumed.Load(), total)
	})
	defer stopProgress()
	interval := time.Second / time.Duration(b.res.Rate)
	start := time.Now()
	for i := range total {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		payload := binary.BigEndian.AppendUint64(nil, uint64(time.Now().UnixNano()))
		if _, err := pub.Events().Publish(ctx, events.Message{Topic: "bench.latency", Key: strconv.Itoa(i % 100), Payload: payload}); err != nil {
			return err
		}
	}
	if err := waitDone(ctx, done, &consumed, total); err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	b.res.P50MS, b.res.P99MS, b.res.MaxMS = percentile(lat, 50), percentile(lat, 99), percentile(lat, 100)
	return nil
}

// report prints status() every second until the returned function is called.
func (b *eventsBench) report(status func() string) (stop func()) {
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				fmt.Fprintln(b.progress, status())
			}
		}
	})
	return func() { close(quit); wg.Wait() }
}

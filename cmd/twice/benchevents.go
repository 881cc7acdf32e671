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
	"github.com/twicehq/twice/internal/report"
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
	// Over time, for the HTML report, each from the start of its run: the events
	// published and consumed per second in the throughput run, and the percentiles of
	// the propagation latency by when the events were published in the latency run.
	Published      report.Rate    `json:"published_per_sec_over_time"`
	Consumed       report.Rate    `json:"consumed_per_sec_over_time"`
	Latency        report.Latency `json:"latency_over_time"`
	LatencySeconds float64        `json:"latency_seconds"`
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
	rep := addReport(fs)
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
	if err := rep.create(); err != nil {
		return err
	}
	defer rep.discard()
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
	return rep.finish(stdout, progress, *asJSON, res)
}

func (r eventsResult) summary() string {
	return fmt.Sprintf("events on %s (%s bus): publish %.0f/s, consume %.0f/s (%d events, %d publishers, %d partitions); "+
		"propagation at %d/s: p50 %.2f ms, p99 %.2f ms, max %.2f ms",
		r.Store, r.Bus, r.PublishPerSec, r.ConsumePerSec, r.Events, r.Publishers, r.Partitions,
		r.Rate, r.P50MS, r.P99MS, r.MaxMS)
}

// page shows the throughput run, publishing and consuming side by side per second, and the
// latency run's percentiles over time, then the figures.
func (r eventsResult) page() *report.Page {
	return &report.Page{Title: fmt.Sprintf("twice bench events: %s, %s bus", r.Store, r.Bus), Summary: r.summary(),
		Facts: []report.Fact{{Name: "store", Value: r.Store}, {Name: "bus", Value: r.Bus},
			{Name: "throughput run", Value: fmt.Sprintf("%d events, one per transaction, from %d publishers; a shared group of %d partitions on another instance consumes them", r.Events, r.Publishers, r.Partitions)},
			{Name: "latency run", Value: fmt.Sprintf("%d events at %d/s", r.LatencyEvents, r.Rate)}},
		Sections: []report.Section{
			{ID: "throughput", Heading: "Throughput", Charts: []report.Chart{{ID: "throughput-chart", Label: "events per second over the throughput run",
				Span: r.ThroughputSeconds, YUnit: "events/s", Series: []report.Series{r.Published.Series("published", 0), r.Consumed.Series("consumed", 1)}}},
				Note: fmt.Sprintf("Events published (committed) and consumed (handled on the other instance) per second, in buckets of %g s from the start of the run; the consumer's line ends where it has caught up.", r.Published.BucketS)},
			{ID: "latency", Heading: "Propagation", Charts: []report.Chart{{ID: "latency-chart", Label: "propagation latency over the latency run",
				Span: r.LatencySeconds, YUnit: "ms", Log: true, Height: 150, Series: r.Latency.Series("publish to handler", 2)}},
				Note: fmt.Sprintf("From before the publishing transaction commits to the handler on the other instance: the 50th (thin), 95th (dashed) and 99th (thick) percentile of the events published in each bucket of %g s, on a logarithmic scale. A gap is a bucket with no event.", r.Latency.BucketS)},
			{ID: "figures-section", Heading: "Figures", Tables: []report.Table{figures(
				figure{"published", report.Format(r.PublishPerSec, 0) + " /s"}, figure{"consumed", report.Format(r.ConsumePerSec, 0) + " /s"},
				figure{"throughput run", report.Format(r.ThroughputSeconds, 2) + " s"},
				figure{"propagation p50", msText(r.P50MS, 2)}, figure{"propagation p99", msText(r.P99MS, 2)}, figure{"propagation max", msText(r.MaxMS, 2)})}},
		}}
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
	meter := report.StartMeter(meterBeat, published.Load, consumed.Load)
	defer meter.Stop()
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
	span, counts := meter.Stop()
	b.res.Published, b.res.Consumed = report.RateOver(counts[0], span), report.RateOver(counts[1], span)
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
	lat := make([]report.Sample, 0, total)
	var start time.Time // set before the first event is published
	var consumed atomic.Int64
	done := make(chan struct{})
	c, err := sub.Events().Subscribe(ctx, events.GroupConfig{Name: "latency", Topics: []string{"bench.latency"},
		Partitions: b.res.Partitions, StartAtEnd: true, Handle: func(_ context.Context, e events.Event) error {
			if len(e.Payload) != 8 {
				return errors.New("bench events: bad payload")
			}
			sent := time.Unix(0, int64(binary.BigEndian.Uint64(e.Payload)))
			mu.Lock()
			lat = append(lat, report.Sample{At: sent.Sub(start).Seconds(), MS: float64(time.Since(sent).Microseconds()) / 1000})
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
	mu.Lock()
	start = time.Now()
	mu.Unlock()
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
	ms := make([]float64, len(lat))
	for i, l := range lat {
		ms[i] = l.MS
		b.res.LatencySeconds = max(b.res.LatencySeconds, l.At)
	}
	b.res.P50MS, b.res.P99MS, b.res.MaxMS = percentile(ms, 50), percentile(ms, 99), percentile(ms, 100)
	b.res.Latency = report.LatencyOver(lat, b.res.LatencySeconds)
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

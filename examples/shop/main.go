// Command shop is the demo that `twice demo` runs three times behind `twice run`: a small
// shop with a support chat that a person clicks through in a browser, each page on a real
// building block of twice, with a footer naming the instance that served the page:
// sessions, a coherent cache (the catalogue), idempotency keys and an event published in
// the order's transaction (its sales counted exactly once by a consumer group), a
// fulfilment workflow started with it (reserve, charge, ship; compensated when the card is
// declined), a confirmation job, optimistic concurrency (If-Match), a cron report, a
// banner in the cluster-wide settings, a restock under a cluster-wide lock, a support chat
// on the realtime hub with who is online (presence), and Prometheus metrics at /metrics.
//
// It reads PORT and TWICE_DSN as `twice run` gives them (and TWICE_INSTANCE, the slot it
// shows), listens on 127.0.0.1:PORT and serves /livez and /readyz from the node:
//
//	twice run -n 3 -- go run ./examples/shop
//
// `go run ./cmd/twice demo` builds it and does that for you.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/twicehq/twice"
)

// Environment the shop reads; `twice run` sets all three.
const (
	envPort     = "PORT"
	envInstance = "TWICE_INSTANCE"
	portDefault = "8080"
	serviceName = "shop" // unless $TWICE_SERVICE says otherwise
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "shop:", err)
		os.Exit(1)
	}
}

// run opens the node, applies the shop's migrations, and serves until ctx ends; then it
// stops taking requests and drains the node (readiness off, leadership and jobs handed
// over).
func run(ctx context.Context) error {
	port := os.Getenv(envPort)
	if port == "" {
		port = portDefault
	}
	addr := net.JoinHostPort("127.0.0.1", port)
	slot := os.Getenv(envInstance)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg := twice.Config{AdvertiseAddr: addr, Logger: log}
	Configure(&cfg)
	if os.Getenv(twice.EnvService) == "" {
		cfg.Name = serviceName
	}
	node, err := twice.Open(ctx, cfg) // DSN: $TWICE_DSN, as twice run sets it
	if err != nil {
		return err
	}
	closeNode := func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := node.Close(cctx); err != nil {
			log.Error("closing the node", "err", err)
		}
	}
	s, err := New(ctx, node, Options{Slot: slot})
	if err != nil {
		closeNode()
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		closeNode()
		return err
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("shop listening", "addr", "http://"+addr, "instance", slot, "id", node.ID())
	select {
	case <-ctx.Done():
	case err = <-served:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	srv.Shutdown(sctx)
	cancel()
	closeNode()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

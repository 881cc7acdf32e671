// Command shop is the demo that `twice demo` runs three times behind `twice run`: a small
// shop with a support chat that a person clicks through in a browser, each page on a real
// building block of twice, with a footer naming the instance that served the page:
// sessions, a coherent cache (the catalogue), idempotency keys and an event published in
// the order's transaction (its sales counted exactly once by a consumer group), a
// fulfilment workflow started with it (reserve, charge, ship; compensated when the card is
// declined), a confirmation job, optimistic concurrency (If-Match), a cron report, a
// banner in the cluster-wide settings, a restock under a cluster-wide lock, a support chat
// on the realtime hub with who is online (presence), Prometheus metrics at /metrics, and a
// shopping cart owned by one instance (partitions), to which the other instances forward
// the cart's requests (forwarding).
//
// It reads PORT and TWICE_DSN as `twice run` gives them (and TWICE_INSTANCE, the slot it
// shows, and SHOP_CLUSTER_SECRET, see clusterSecret), listens on 127.0.0.1:PORT, which it
// advertises to the other instances, and serves /livez and /readyz from the node:
//
//	twice run -n 3 -- go run ./examples/shop
//
// `go run ./cmd/twice demo` builds it and does that for you.
package main

import (
	"context"
	"crypto/sha256"
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

// Environment the shop reads; `twice run` sets PORT, TWICE_INSTANCE and TWICE_DSN, and
// `twice demo` SHOP_CLUSTER_SECRET too.
const (
	envPort     = "PORT"
	envInstance = "TWICE_INSTANCE"
	envSecret   = "SHOP_CLUSTER_SECRET"
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
	// The other instances forward cart requests to addr, signed with the cluster secret.
	cfg := twice.Config{AdvertiseAddr: addr, ClusterSecret: clusterSecret(log), Logger: log}
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
	s.Close()
	closeNode()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// clusterSecret returns the secret every instance shares, which signs the cart requests
// they forward to each other and their bus messages: $SHOP_CLUSTER_SECRET, which `twice
// demo` sets to a random secret it gives all three instances. Without it (a bare `twice run
// -- go run ./examples/shop`), the shop derives one from the DSN, which every instance is
// given, and warns: then anyone who knows the DSN can sign requests as an instance. Never
// copy that into production: give every instance the same random secret from your secret
// store (openssl rand -base64 32).
func clusterSecret(log *slog.Logger) []byte {
	if s := os.Getenv(envSecret); s != "" {
		return []byte(s)
	}
	log.Warn("shop: " + envSecret + " is not set: the cluster secret is derived from the DSN, which is fine for a demo " +
		"on one machine and never for production: set it to the same random secret on every instance (openssl rand -base64 32)")
	sum := sha256.Sum256([]byte("twice demo shop: a cluster secret anyone with the DSN can derive\n" + os.Getenv(twice.EnvDSN)))
	return sum[:]
}

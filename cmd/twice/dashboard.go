package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/dashboard"
)

// envDashboardToken is the dashboard's access token when --token is not given.
const envDashboardToken = "TWICE_DASHBOARD_TOKEN"

const dashboardNote = "--addr defaults to 127.0.0.1:8081; an address other than loopback needs --token (default\n$" +
	envDashboardToken + ") or --read-only-token: the browser asks for it as the basic-auth password,\nthe user name being recorded as who acted. --read-only hides and refuses every action.\n" +
	"--service defaults to $TWICE_SERVICE, or the only service in the database.\n" + dbNote

// dashboardCmd runs `twice dashboard`: the web dashboard of one service, from a machine that
// runs no instance of it, until ctx ends.
func dashboardCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dashboard", flag.ContinueOnError)
	var db dbFlags
	db.register(fs)
	service := fs.String("service", os.Getenv(twice.EnvService), "the service (default $"+twice.EnvService+", or the only one in the database)")
	addr := fs.String("addr", "127.0.0.1:8081", "the address to listen on")
	token := fs.String("token", os.Getenv(envDashboardToken), "the access token (default $"+envDashboardToken+")")
	roToken := fs.String("read-only-token", "", "a second token that may look but not act")
	readOnly := fs.Bool("read-only", false, "hide and refuse every action")
	interval := fs.Duration("interval", dashboard.IntervalDefault, "how often the shared snapshot is read while someone watches")
	if _, err := parseN(fs, args, 0, "no arguments"); err != nil {
		return err
	}
	if *interval <= 0 {
		return fmt.Errorf("%w: --interval %v is not positive", errUsage, *interval)
	}
	host, _, err := net.SplitHostPort(*addr)
	if err != nil {
		return fmt.Errorf("%w: --addr %q: %v", errUsage, *addr, err)
	}
	if !loopback(host) && *token == "" && *roToken == "" {
		return fmt.Errorf("%w: --addr %s is not a loopback address: set --token (or $%s) so that not everyone who reaches it can act",
			errUsage, *addr, envDashboardToken)
	}
	a := adminFlags{db: db, service: *service}
	s, svc, err := a.open(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	instance := toolInstance("twice-dashboard")
	b, err := toolBus(ctx, s, svc, instance)
	if err != nil {
		return err
	}
	defer b.Close(context.WithoutCancel(ctx))
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("service", svc)
	d, err := dashboard.New(dashboard.Target{Store: s, Service: svc, Bus: b, Instance: instance},
		dashboard.Config{Token: *token, ReadOnlyToken: *roToken, ReadOnly: *readOnly, Interval: *interval, Logger: log})
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: d, ReadHeaderTimeout: 10 * time.Second}
	mode := ""
	if *readOnly {
		mode = " (read-only)"
	}
	fmt.Fprintf(stdout, "twice dashboard: service %s of %s at http://%s/%s\n", svc, s, ln.Addr(), mode)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		d.Close()
		return err
	case <-ctx.Done():
	}
	d.Close() // ends the live streams, which Shutdown would wait for
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// loopback reports whether host (of an address to listen on) is only reachable from this
// machine; the empty host listens on every interface.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

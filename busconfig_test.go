package twice_test

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnats"
	"github.com/twicehq/twice/internal/testnode"
)

func sqliteConfig(t *testing.T) twice.Config {
	return twice.Config{DSN: "sqlite:" + filepath.Join(t.TempDir(), "x.db"), Name: "svc", Logger: testdb.Logger(t)}
}

func TestClusterSecretMustBeLongEnough(t *testing.T) {
	t.Parallel()
	cfg := sqliteConfig(t)
	cfg.ClusterSecret = []byte("swordfish-swordfish-swordfish") // 29 bytes
	_, err := twice.Open(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "ClusterSecret is 29 bytes; at least 32") {
		t.Fatalf("short secret: %v", err)
	}
	if strings.Contains(err.Error(), "swordfish") {
		t.Fatalf("the error shows the secret: %v", err)
	}
}

func TestNATSConfigNeedsANATSBus(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]struct {
		bus  string
		nats twice.NATSConfig
		want string
	}{
		"without a NATS bus":    {"", twice.NATSConfig{CredsFile: "user.creds"}, "Bus names no NATS server"},
		"creds and nkey":        {"nats://127.0.0.1:1", twice.NATSConfig{CredsFile: "a", NKeyFile: "b"}, "exclusive"},
		"an unreadable nkey":    {"nats://127.0.0.1:1", twice.NATSConfig{NKeyFile: filepath.Join(t.TempDir(), "none.nk")}, "NATS.NKeyFile"},
		"options without a bus": {"", twice.NATSConfig{Options: []nats.Option{nats.Name("x")}}, "Bus names no NATS server"},
	} {
		cfg := sqliteConfig(t)
		cfg.Bus, cfg.NATS = c.bus, c.nats
		if _, err := twice.Open(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// The NATS options reach the connection: a last option sees what the others set (and
// undoes it, so the test server without TLS or accounts still takes the connection).
func TestNATSConfigReachesTheConnection(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := sqliteConfig(t)
	cfg.Bus = testnats.URL(t)
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	// nats.go reads the JWT of a credentials file as it applies the option.
	credsFile := filepath.Join(t.TempDir(), "user.creds")
	if err := os.WriteFile(credsFile, []byte("-----BEGIN NATS USER JWT-----\neyJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.c2ln\n------END NATS USER JWT------\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.NATS = twice.NATSConfig{CredsFile: credsFile, TLS: tlsConfig}
	var secure, creds bool
	cfg.NATS.Options = []nats.Option{func(o *nats.Options) error {
		secure, creds = o.Secure && o.TLSConfig == tlsConfig, o.UserJWT != nil && o.SignatureCB != nil
		o.Secure, o.TLSConfig, o.UserJWT, o.SignatureCB = false, nil, nil, nil
		return nil
	}}
	n, err := twice.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close(ctx)
	if !secure || !creds {
		t.Fatalf("TLS applied: %v, credentials applied: %v", secure, creds)
	}
}

// Nodes with different cluster secrets share a database (and a NATS server) but do not
// hear each other's signals; nodes with the same secret do.
func TestClusterSecretSeparatesClusters(t *testing.T) {
	t.Parallel()
	for name, busURL := range map[string]string{"store": "", "nats": "nats"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if busURL != "" {
				busURL = testnats.URL(t)
			}
			testdb.Each(t, func(t *testing.T, db testdb.DB) {
				t.Parallel()
				ctx := context.Background()
				// On NATS the subtests of each store share subjects unless their services differ.
				service := testnats.Service()
				open := func(secret string) *twice.Node {
					return testnode.Open(t, db, service, twice.Config{Bus: busURL, ClusterSecret: []byte(secret)})
				}
				one, other := strings.Repeat("1", 32), strings.Repeat("2", 32)
				a, b, c := open(one), open(one), open(other)
				got := map[*twice.Node]chan string{a: make(chan string, 10), b: make(chan string, 10), c: make(chan string, 10)}
				for n, ch := range got {
					t.Cleanup(n.Bus().Subscribe("probe", func(m bus.Message) { ch <- string(m.Payload) }))
				}
				recv := func(n *twice.Node, want string) {
					t.Helper()
					select {
					case p := <-got[n]:
						if p != want {
							t.Fatalf("received %q, want %q", p, want)
						}
					case <-time.After(20 * time.Second):
						t.Fatalf("%q not received", want)
					}
				}
				if err := a.Bus().Publish(ctx, "probe", []byte("from a")); err != nil {
					t.Fatal(err)
				}
				recv(a, "from a")
				recv(b, "from a")
				if err := c.Bus().Publish(ctx, "probe", []byte("from c")); err != nil {
					t.Fatal(err)
				}
				// In order on the channel: c's own message comes after a's, which it dropped.
				recv(c, "from c")
				if st := c.BusStats(); st.Forged == 0 || st.Verified == 0 {
					t.Fatalf("c's stats %+v", st)
				}
				if err := b.Bus().Publish(ctx, "probe", []byte("from b")); err != nil {
					t.Fatal(err)
				}
				recv(a, "from b")
				recv(b, "from b")
				if st := a.BusStats(); st.Forged == 0 {
					t.Fatalf("a counted nothing dropped: %+v", st)
				}
			})
		})
	}
}

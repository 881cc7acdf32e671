package bustest

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/bus/natsbus"
	"github.com/twicehq/twice/store"
)

// Injector puts a raw message on a bus's transport, as an outsider with access to it could,
// bypassing the bus's own Publish (and any signing).
type Injector func(t testing.TB, channel string, payload []byte, from string)

// InjectStore puts a message on the store-native bus of service in s's database the way
// anyone able to run SQL there could: on PostgreSQL a raw pg_notify on the service's
// channel (NOTIFY needs no privilege), on SQLite a raw row in twice_bus. The payload is
// sent as given, with no signature.
func InjectStore(t testing.TB, s *store.Store, service, channel string, payload []byte, from string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if payload == nil {
		payload = []byte{}
	}
	var err error
	if s.Dialect() == store.Postgres {
		// The store bus's wire format: a JSON array of {channel, base64 payload, sender}.
		body, merr := json.Marshal([]struct {
			C string `json:"c"`
			P []byte `json:"p,omitempty"`
			F string `json:"f"`
		}{{channel, payload, from}})
		if merr != nil {
			t.Fatal(merr)
		}
		_, err = s.Exec(ctx, "SELECT pg_notify($1, $2)", bus.PGChannel(s.Schema(), service), string(body))
	} else {
		_, err = s.Exec(ctx, s.SQL("INSERT INTO twice_bus (service, channel, payload, sender) VALUES ($1, $2, $3, $4)"),
			service, channel, payload, from)
	}
	if err != nil {
		t.Fatalf("bustest: inject on %s: %v", channel, err)
	}
}

// InjectNATS publishes a message on the subject of channel of service on the NATS server at
// url, as any client allowed to publish on twice.bus.> could, with no signature.
func InjectNATS(t testing.TB, url, service, channel string, payload []byte, from string) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("bustest: connect to NATS: %v", err)
	}
	defer nc.Close()
	m := &nats.Msg{Subject: natsbus.Subject(service, channel), Data: payload, Header: nats.Header{natsbus.HeaderFrom: {from}}}
	if err := nc.PublishMsg(m); err != nil {
		t.Fatalf("bustest: inject on %s: %v", channel, err)
	}
	if err := nc.FlushTimeout(10 * time.Second); err != nil {
		t.Fatalf("bustest: inject on %s: %v", channel, err)
	}
}

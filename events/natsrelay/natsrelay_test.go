package natsrelay_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/events/natsrelay"
	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/internal/testnats"
	"github.com/twicehq/twice/internal/testnode"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The relay forwards every event once to JetStream; a replay of the relay's group sends
// them again and JetStream drops the repeats by their message id.
func TestRelay(t *testing.T) {
	t.Parallel()
	url := testnats.URL(t)
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		ctx := context.Background()
		node, err := twice.Open(ctx, twice.Config{DSN: db.DSN, Schema: db.Schema, Name: "shop", Logger: testdb.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		defer node.Close(ctx)
		nc, err := nats.Connect(url)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		suffix := hex.EncodeToString(b)
		stream, subject := "TWICE_TEST_"+strings.ToUpper(suffix), "twice.test."+suffix
		t.Cleanup(func() { _ = js.DeleteStream(context.Background(), stream) })

		relay, err := natsrelay.Start(ctx, node.Events(), natsrelay.Config{Topic: "order", Conn: nc, Subject: subject, Stream: stream, BatchSize: 16})
		if err != nil {
			t.Fatal(err)
		}
		defer relay.Close(ctx)
		var ids []int64
		for i := range 5 {
			got, err := node.Events().Publish(ctx,
				events.Message{Topic: "order", Key: "k", Payload: []byte{byte(i)}, Headers: map[string]string{"type": "Placed", "odd: name\r\n": "x\r\ny"}},
				events.Message{Topic: "other", Payload: []byte("not relayed")},
				events.Message{Topic: "order", Payload: []byte("no key")})
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, got[0], got[2])
		}
		v, err := node.Events().Append(ctx, "order-7", events.NoStream, events.Message{Payload: []byte("placed")})
		if err != nil || v != 1 {
			t.Fatal(v, err)
		}
		waitMsgs(t, js, stream, 11)
		// Send everything again: JetStream keeps one copy of each.
		if err := node.Events().Replay(ctx, "relay:order", nil); err != nil {
			t.Fatal(err)
		}
		testnode.EventuallyNil(t, 30*time.Second, func() error {
			lag, err := relay.Lag(ctx, node.Events())
			if err != nil {
				t.Fatal(err)
			}
			if lag.Pending != 0 {
				return fmt.Errorf("relay lag %d after replay", lag.Pending)
			}
			return nil
		})
		s, err := js.Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil || info.State.Msgs != 11 {
			t.Fatalf("stream holds %d messages after the replay (%v), want 11", info.State.Msgs, err)
		}
		var got []int64
		for seq := uint64(1); seq <= 11; seq++ {
			raw, err := s.GetMsg(ctx, seq)
			if err != nil {
				t.Fatal(err)
			}
			d, err := natsrelay.Decode(&nats.Msg{Subject: raw.Subject, Header: raw.Header, Data: raw.Data})
			if err != nil {
				t.Fatalf("message %d: %v", seq, err)
			}
			if d.Service != "shop" || d.Topic != "order" || d.At.IsZero() {
				t.Fatalf("message %d decoded as %+v", seq, d)
			}
			if d.Stream != "" {
				if d.Stream != "order-7" || d.Version != 1 || string(d.Payload) != "placed" {
					t.Fatalf("stream event decoded as %+v", d)
				}
				continue
			}
			if d.Key == "k" && (d.Headers["type"] != "Placed" || d.Headers["odd: name\r\n"] != "x\r\ny") {
				t.Fatalf("headers decoded as %v", d.Headers)
			}
			got = append(got, d.ID)
		}
		slices.Sort(got)
		if !slices.Equal(got, ids) {
			t.Fatalf("relayed %v, want %v", got, ids)
		}
	})
}

func waitMsgs(t *testing.T, js jetstream.JetStream, stream string, n uint64) {
	t.Helper()
	ctx := context.Background()
	testnode.EventuallyNil(t, 30*time.Second, func() error {
		s, err := js.Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs < n {
			return fmt.Errorf("stream holds %d messages, want %d", info.State.Msgs, n)
		}
		return nil
	})
}

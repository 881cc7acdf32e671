package natsrelay_test

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/twicehq/twice/events"
	"github.com/twicehq/twice/events/natsrelay"
)

func TestDecodeRoundTrip(t *testing.T) {
	t.Parallel()
	e := events.Event{ID: 42, Topic: "order", Key: "k", Payload: []byte("p"), Headers: map[string]string{"a": "b"},
		Stream: "order-1", Version: 3, At: time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)}
	d, err := natsrelay.Decode(natsrelay.Message("shop", "s", e))
	if err != nil {
		t.Fatal(err)
	}
	if d.Service != "shop" || d.ID != 42 || d.Topic != "order" || d.Key != "k" || string(d.Payload) != "p" ||
		d.Headers["a"] != "b" || d.Stream != "order-1" || d.Version != 3 || !d.At.Equal(e.At) {
		t.Fatalf("decoded %+v", d)
	}
	for name, m := range map[string]*nats.Msg{
		"nil":            nil,
		"no headers":     {Data: []byte("x")},
		"bad id":         withHeader(e, natsrelay.HeaderEventID, "-1"),
		"bad time":       withHeader(e, natsrelay.HeaderTime, "yesterday"),
		"bad version":    withHeader(e, natsrelay.HeaderVersion, "x"),
		"bad headers":    withHeader(e, natsrelay.HeaderHeaders, "[1]"),
		"version alone":  withHeader(e, natsrelay.HeaderStream, ""),
		"no topic":       withHeader(e, natsrelay.HeaderTopic, ""),
		"repeated topic": repeated(e, natsrelay.HeaderTopic),
	} {
		if _, err := natsrelay.Decode(m); !errors.Is(err, natsrelay.ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func withHeader(e events.Event, name, value string) *nats.Msg {
	m := natsrelay.Message("shop", "s", e)
	if value == "" {
		m.Header.Del(name)
	} else {
		m.Header.Set(name, value)
	}
	return m
}

func repeated(e events.Event, name string) *nats.Msg {
	m := natsrelay.Message("shop", "s", e)
	m.Header.Add(name, "again")
	return m
}

// FuzzDecode feeds Decode headers as another service (or an attacker) could set them: it
// must return an event or ErrMalformed, never panic, and what it returns must be within the
// log's limits.
func FuzzDecode(f *testing.F) {
	f.Add("42", "shop", "order", "k", "2026-01-02T03:04:05Z", "", "", `{"a":"b"}`, []byte("p"))
	f.Add("1", "s", "t", "", "2026-01-02T03:04:05.123456789+02:00", "order-1", "7", "", []byte{})
	f.Add("0", "", "", "", "", "x", "", "{", []byte(nil))
	f.Add("9223372036854775807", "s", "t", "k", "2026-01-02T03:04:05Z", "s", "-3", `{"":""}`, []byte("x"))
	f.Fuzz(func(t *testing.T, id, service, topic, key, at, stream, version, headers string, data []byte) {
		h := nats.Header{}
		for name, v := range map[string]string{
			natsrelay.HeaderEventID: id, natsrelay.HeaderService: service, natsrelay.HeaderTopic: topic,
			natsrelay.HeaderKey: key, natsrelay.HeaderTime: at, natsrelay.HeaderStream: stream,
			natsrelay.HeaderVersion: version, natsrelay.HeaderHeaders: headers,
		} {
			if v != "" {
				h.Set(name, v)
			}
		}
		d, err := natsrelay.Decode(&nats.Msg{Header: h, Data: data})
		if err != nil {
			if !errors.Is(err, natsrelay.ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if d.ID <= 0 || d.Topic == "" || len(d.Topic) > events.MaxTopic || len(d.Headers) > events.MaxHeaders ||
			(d.Stream != "") != (d.Version > 0) {
			t.Fatalf("accepted out-of-bounds event %+v", d)
		}
	})
}

package natsrelay

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/twicehq/twice/events"
)

// ErrMalformed is wrapped by every error [Decode] returns.
var ErrMalformed = errors.New("natsrelay: malformed relayed event")

// Decoded is a relayed event as a consuming service reads it back.
type Decoded struct {
	// Service is the publishing service.
	Service string
	events.Event
}

// Decode reads a message the relay published (from a JetStream consumer, say) back into an
// event. It checks every header, since the message crossed a service boundary: a missing
// or malformed one is an error wrapping [ErrMalformed], never a zero value passed on.
func Decode(m *nats.Msg) (Decoded, error) {
	var d Decoded
	if m == nil || m.Header == nil {
		return d, fmt.Errorf("%w: no headers", ErrMalformed)
	}
	h := m.Header
	get := func(name string, required bool) (string, error) {
		vs := h.Values(name)
		switch {
		case len(vs) == 0 && required:
			return "", fmt.Errorf("%w: no %s header", ErrMalformed, name)
		case len(vs) > 1:
			return "", fmt.Errorf("%w: %d %s headers", ErrMalformed, len(vs), name)
		case len(vs) == 0:
			return "", nil
		}
		if !utf8.ValidString(vs[0]) {
			return "", fmt.Errorf("%w: %s is not UTF-8", ErrMalformed, name)
		}
		return vs[0], nil
	}
	var err error
	var id, at, version, headers string
	for _, f := range []struct {
		name     string
		dst      *string
		required bool
	}{
		{HeaderEventID, &id, true}, {HeaderService, &d.Service, true}, {HeaderTopic, &d.Topic, true},
		{HeaderKey, &d.Key, false}, {HeaderTime, &at, true}, {HeaderStream, &d.Stream, false},
		{HeaderVersion, &version, false}, {HeaderHeaders, &headers, false},
	} {
		if *f.dst, err = get(f.name, f.required); err != nil {
			return Decoded{}, err
		}
	}
	if d.ID, err = strconv.ParseInt(id, 10, 64); err != nil || d.ID <= 0 {
		return Decoded{}, fmt.Errorf("%w: %s %q is not a positive integer", ErrMalformed, HeaderEventID, id)
	}
	if d.Topic == "" || len(d.Topic) > events.MaxTopic || len(d.Key) > events.MaxKey || len(d.Stream) > events.MaxKey {
		return Decoded{}, fmt.Errorf("%w: topic, key or stream out of bounds", ErrMalformed)
	}
	if d.At, err = time.Parse(time.RFC3339Nano, at); err != nil {
		return Decoded{}, fmt.Errorf("%w: %s: %v", ErrMalformed, HeaderTime, err)
	}
	if (d.Stream == "") != (version == "") {
		return Decoded{}, fmt.Errorf("%w: %s and %s go together", ErrMalformed, HeaderStream, HeaderVersion)
	}
	if version != "" {
		if d.Version, err = strconv.ParseInt(version, 10, 64); err != nil || d.Version <= 0 {
			return Decoded{}, fmt.Errorf("%w: %s %q is not a positive integer", ErrMalformed, HeaderVersion, version)
		}
	}
	if headers != "" {
		if len(headers) > 2*events.MaxHeaderBytes+4*events.MaxHeaders+2 {
			return Decoded{}, fmt.Errorf("%w: %s of %d bytes", ErrMalformed, HeaderHeaders, len(headers))
		}
		if err := json.Unmarshal([]byte(headers), &d.Headers); err != nil {
			return Decoded{}, fmt.Errorf("%w: %s: %v", ErrMalformed, HeaderHeaders, err)
		}
		if len(d.Headers) > events.MaxHeaders {
			return Decoded{}, fmt.Errorf("%w: %d headers", ErrMalformed, len(d.Headers))
		}
	}
	d.Payload = m.Data
	return d, nil
}

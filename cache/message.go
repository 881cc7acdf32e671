package cache

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/twicehq/twice/bus"
)

// Channel is the bus channel invalidations travel on.
const Channel = "twice.cache"

// wireVersion is the first byte of every invalidation message.
const wireVersion = 1

const flagAll = 1

// message is one invalidation as it travels on the bus: a cache's name and keys (or every
// key), and the token of the InvalidateTx that sent it, if any.
//
// Layout: version byte, flags byte, uvarint token, uvarint name length, name, uvarint key
// count, then each key as uvarint length and bytes. Binary rather than JSON because keys
// are arbitrary bytes, which JSON strings would mangle.
type message struct {
	name  string
	all   bool
	token uint64
	keys  []string
}

var errMalformed = errors.New("cache: malformed invalidation message")

func (m message) size() int {
	n := 2 + binary.MaxVarintLen64*2 + len(m.name) + binary.MaxVarintLen64
	for _, k := range m.keys {
		n += binary.MaxVarintLen64 + len(k)
	}
	return n
}

func (m message) encode() []byte {
	b := make([]byte, 0, m.size())
	var flags byte
	if m.all {
		flags |= flagAll
	}
	b = append(b, wireVersion, flags)
	b = binary.AppendUvarint(b, m.token)
	b = binary.AppendUvarint(b, uint64(len(m.name)))
	b = append(b, m.name...)
	b = binary.AppendUvarint(b, uint64(len(m.keys)))
	for _, k := range m.keys {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
	}
	return b
}

// decode parses a message, refusing anything [message.encode] would not have produced.
// Messages come from other instances, possibly of another version, so nothing is trusted.
func decode(b []byte) (message, error) {
	var m message
	if len(b) < 2 {
		return m, fmt.Errorf("%w: %d bytes", errMalformed, len(b))
	}
	if b[0] != wireVersion {
		return m, fmt.Errorf("%w: version %d", errMalformed, b[0])
	}
	if b[1]&^flagAll != 0 {
		return m, fmt.Errorf("%w: unknown flags %#x", errMalformed, b[1])
	}
	m.all = b[1]&flagAll != 0
	r := reader{b: b[2:]}
	m.token = r.uvarint()
	m.name = r.bytes(MaxName)
	n := r.uvarint()
	if r.err == nil && n > uint64(len(r.b)) {
		// Each key takes at least its one length byte.
		r.err = fmt.Errorf("%w: %d keys in %d bytes", errMalformed, n, len(r.b))
	}
	for i := uint64(0); r.err == nil && i < n; i++ {
		m.keys = append(m.keys, r.bytes(MaxKey))
	}
	switch {
	case r.err != nil:
		return message{}, r.err
	case len(r.b) > 0:
		return message{}, fmt.Errorf("%w: %d trailing bytes", errMalformed, len(r.b))
	case !validName(m.name):
		return message{}, fmt.Errorf("%w: cache name %q", errMalformed, m.name)
	case m.all && len(m.keys) > 0:
		return message{}, fmt.Errorf("%w: keys with the all flag", errMalformed)
	}
	return m, nil
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	// A padded varint decodes, but encode never writes one.
	if n <= 0 || n != len(binary.AppendUvarint(nil, v)) {
		r.err = fmt.Errorf("%w: bad varint", errMalformed)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes(limit int) string {
	n := r.uvarint()
	if r.err != nil {
		return ""
	}
	if n > uint64(limit) || n > uint64(len(r.b)) {
		r.err = fmt.Errorf("%w: a string of %d bytes (limit %d, %d left)", errMalformed, n, limit, len(r.b))
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

// split packs keys into as few messages as fit the bus's payload limit.
func split(name string, token uint64, keys []string) []message {
	var out []message
	cur := message{name: name, token: token}
	for _, k := range keys {
		if len(cur.keys) > 0 && cur.size()+binary.MaxVarintLen64+len(k) > bus.MaxPayload {
			out = append(out, cur)
			cur = message{name: name, token: token}
		}
		cur.keys = append(cur.keys, k)
	}
	return append(out, cur)
}

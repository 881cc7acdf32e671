package bus

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/twicehq/twice/internal/clusterkey"
)

// MinSecret is the shortest cluster secret a [Signer] accepts, in bytes.
const MinSecret = clusterkey.MinLen

// DefaultMaxAge is how far the send time of a signed message may lie from the receiver's
// clock, either way, before the message is dropped as a replay. The clocks of the
// instances must agree within it (NTP keeps them within milliseconds).
const DefaultMaxAge = time.Minute

// SignatureSize is what signing adds to each payload on the wire, in bytes: a format byte,
// the send time and an HMAC-SHA256 tag. It comes on top of [MaxPayload], within every
// backend's own limit (PostgreSQL's NOTIFY takes 8000 bytes).
const SignatureSize = 1 + 8 + clusterkey.Size

// signedFormat is the first byte of a signed payload.
const signedFormat = 0xa1

// SignerConfig configures a [Signer].
type SignerConfig struct {
	// Secret is the cluster secret every instance of the service shares, at least
	// [MinSecret] bytes. Required.
	Secret []byte
	// Service is the service whose messages are signed; a message signed for another
	// service never verifies. Required.
	Service string
	// MaxAge is how far a message's send time may lie from this instance's clock. Defaults
	// to [DefaultMaxAge].
	MaxAge time.Duration
	// Logger receives a warning, at most once a minute, when messages are dropped. Defaults
	// to slog.Default().
	Logger *slog.Logger
	// Now replaces the clock. For tests only; defaults to time.Now.
	Now func() time.Time
}

// Signer signs every message an instance sends and checks every message it receives, with
// a secret the instances of a service share. Without it any database role can NOTIFY a
// message into the store-native bus, and any NATS client allowed on the subjects can
// publish one. A message is signed over its service, channel, sender, payload and send
// time (HMAC-SHA256 with a key derived from the secret for the bus alone). Messages that
// are unsigned, signed with another secret, altered or replayed later than MaxAge are
// dropped and counted ([Signer.Stats]); a replay within MaxAge is delivered again, which
// the bus's rule makes harmless (a message is only a hint to re-read the database).
//
// A nil *Signer signs and checks nothing. A Signer is safe for concurrent use.
type Signer struct {
	key    *clusterkey.Key
	maxAge int64 // seconds
	now    func() time.Time
	log    *slog.Logger

	verified, unsigned, forged, stale atomic.Uint64
	lastWarn                          atomic.Int64 // unix seconds of the last warning
}

// SignerStats counts the messages a [Signer] checked.
type SignerStats struct {
	// Verified counts the messages delivered.
	Verified uint64 `json:"verified"`
	// Unsigned counts those dropped for carrying no signature.
	Unsigned uint64 `json:"unsigned"`
	// Forged counts those dropped because their signature did not match: signed with
	// another secret, for another service, channel or sender, or altered.
	Forged uint64 `json:"forged"`
	// Stale counts those dropped because their send time was further than MaxAge from
	// this instance's clock: a replay, or clocks out of step.
	Stale uint64 `json:"stale"`
}

// Dropped is the number of messages dropped.
func (s SignerStats) Dropped() uint64 { return s.Unsigned + s.Forged + s.Stale }

// NewSigner returns a signer for cfg. The error never shows the secret.
func NewSigner(cfg SignerConfig) (*Signer, error) {
	if cfg.Service == "" {
		return nil, errors.New("bus: SignerConfig.Service is required")
	}
	if len(cfg.Secret) < MinSecret {
		return nil, fmt.Errorf("bus: the cluster secret is %d bytes; at least %d are required", len(cfg.Secret), MinSecret)
	}
	key, err := clusterkey.Derive(cfg.Secret, clusterkey.Bus, cfg.Service)
	if err != nil {
		return nil, err
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	maxAge := int64(cfg.MaxAge / time.Second)
	return &Signer{key: key, maxAge: max(maxAge, 1), now: cfg.Now, log: cfg.Logger}, nil
}

// Sign returns payload prefixed with its signature for channel and sender from. A nil
// Signer returns payload as it is.
func (s *Signer) Sign(channel, from string, payload []byte) []byte {
	if s == nil {
		return payload
	}
	out := make([]byte, 9, SignatureSize+len(payload))
	out[0] = signedFormat
	// Whole seconds: the same message sent twice within a second is the same bytes, so a
	// backend's merging of duplicates in a batch still works.
	binary.BigEndian.PutUint64(out[1:9], uint64(s.now().Unix()))
	out = s.key.Sum(out, []byte(channel), []byte(from), out[1:9], payload)
	return append(out, payload...)
}

// Open checks signed, received on channel from sender from, and returns the payload
// without its signature. ok is false, and the message counted in [Signer.Stats], when it
// must be dropped. A nil Signer returns signed as it is.
func (s *Signer) Open(channel, from string, signed []byte) (payload []byte, ok bool) {
	if s == nil {
		return signed, true
	}
	if len(signed) < SignatureSize || signed[0] != signedFormat {
		s.drop(&s.unsigned, "unsigned", channel, from)
		return nil, false
	}
	at, tag, payload := signed[1:9], signed[9:SignatureSize], signed[SignatureSize:]
	if !s.key.Verify(tag, []byte(channel), []byte(from), at, payload) {
		s.drop(&s.forged, "signed with another secret, or altered", channel, from)
		return nil, false
	}
	if age := s.now().Unix() - int64(binary.BigEndian.Uint64(at)); age > s.maxAge || age < -s.maxAge {
		s.drop(&s.stale, "sent too long ago (a replay, or clocks out of step)", channel, from)
		return nil, false
	}
	s.verified.Add(1)
	return payload, true
}

func (s *Signer) drop(counter *atomic.Uint64, why, channel, from string) {
	counter.Add(1)
	now := s.now().Unix()
	if last := s.lastWarn.Load(); now-last >= 60 && s.lastWarn.CompareAndSwap(last, now) {
		st := s.Stats()
		s.log.Warn("bus: dropped a message not signed with this service's cluster secret", "why", why,
			"channel", channel, "from", from, "unsigned", st.Unsigned, "forged", st.Forged, "stale", st.Stale)
	}
}

// Stats returns the counts of checked messages. A nil Signer has none.
func (s *Signer) Stats() SignerStats {
	if s == nil {
		return SignerStats{}
	}
	return SignerStats{Verified: s.verified.Load(), Unsigned: s.unsigned.Load(), Forged: s.forged.Load(), Stale: s.stale.Load()}
}

package bus

import (
	"context"
	"embed"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/twicehq/twice/store"
)

//go:embed migrations
var migrations embed.FS

// Component is the bus's schema (a table on SQLite, nothing on PostgreSQL).
func Component() store.Component {
	return store.MustLoadComponent("bus", migrations, store.Table{Name: "twice_bus", Service: "service", Dialect: store.SQLite})
}

// DefaultFlush is the spacing of the store bus's sends under load: at most one NOTIFY (a
// row on SQLite) per 4 ms on average, each carrying every message published since the one
// before, and two at once after a quiet spell.
const DefaultFlush = 4 * time.Millisecond

// DefaultPoll is how often the SQLite backend looks for signals that nobody announced: a
// pragma read, and a query once a second.
const DefaultPoll = time.Second

// DefaultFastPoll is how often the SQLite backend looks for signals when it cannot rely on
// being woken; the look is a pragma read unless another process has committed.
const DefaultFastPoll = 5 * time.Millisecond

// DefaultRetention is how long SQLite keeps signal rows. A poller that falls further behind
// than half of it reports Lost.
const DefaultRetention = time.Minute

// Config configures the store-native bus.
type Config struct {
	// Service scopes every channel: services sharing a database never see each other's
	// signals.
	Service string
	// Instance is this instance's id, sent as [Message.From].
	Instance string
	// Flush spaces the sends: on average at most one per Flush, two at once after a quiet
	// spell; the messages published meanwhile go together. Defaults to [DefaultFlush].
	Flush time.Duration
	// Poll is how often the SQLite backend looks for signals when nothing wakes it. Its
	// instances, all on one host, wake each other through Unix datagram sockets in a
	// directory beside the database file (<file>.bus) as their signals commit, so this poll
	// is only the fallback, for signals nobody announced (rows written from outside, an
	// instance that died between its commit and its announcement). Keep it well under half
	// of Retention: a poller that has not read for that long reports Lost. Defaults to
	// [DefaultPoll].
	Poll time.Duration
	// FastPoll is how often the SQLite backend looks while it cannot rely on being woken:
	// where the sockets are unavailable (Windows, a directory it cannot create). Defaults
	// to [DefaultFastPoll].
	FastPoll time.Duration
	// Retention is how long SQLite keeps signal rows. Defaults to [DefaultRetention].
	Retention time.Duration
	// Signer signs every message sent and drops every message received that it does not
	// verify. Defaults to nil: messages are neither signed nor checked.
	Signer *Signer
	// Logger defaults to slog.Default(). It should carry the instance id.
	Logger *slog.Logger
	// Panics, if set, counts the panics recovered from subscribers; each is also logged
	// with its stack. Defaults to nil: logged only.
	Panics *atomic.Int64
}

// NewStore starts the bus of s's dialect: LISTEN/NOTIFY on PostgreSQL, a table on SQLite
// (migrated with [Component]) whose readers wake each other through Unix sockets.
func NewStore(ctx context.Context, s *store.Store, cfg Config) (Bus, error) {
	if cfg.Service == "" || cfg.Instance == "" {
		return nil, errors.New("bus: Config.Service and Config.Instance are required")
	}
	if cfg.Flush == 0 {
		cfg.Flush = DefaultFlush
	}
	if cfg.Poll == 0 {
		cfg.Poll = DefaultPoll
	}
	if cfg.FastPoll == 0 {
		cfg.FastPoll = DefaultFastPoll
	}
	if cfg.Retention == 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	// Never return a failed constructor's nil *pgBus as a Bus: the interface would not be
	// nil, and a caller's cleanup would call Close on it.
	if s.Dialect() == store.Postgres {
		b, err := newPG(ctx, s, cfg)
		if err != nil {
			return nil, err
		}
		return b, nil
	}
	b, err := newSQLite(ctx, s, cfg)
	if err != nil {
		return nil, err
	}
	return b, nil
}

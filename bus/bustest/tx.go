package bustest

import (
	"context"
	"testing"

	"github.com/twicehq/twice/store"
)

// BeginStore returns a [Backend.Begin] that opens its transactions on s, for a backend
// whose PublishTx joins twice's own store transactions.
func BeginStore(s *store.Store) func(t *testing.T) Tx {
	return func(t *testing.T) Tx {
		tx, err := s.Begin(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return storeTx{tx}
	}
}

// storeTx is a [store.Tx] as a [Tx].
type storeTx struct{ tx store.Tx }

func (s storeTx) Handle() any     { return s.tx }
func (s storeTx) Commit() error   { return s.tx.Commit(context.Background()) }
func (s storeTx) Rollback() error { return s.tx.Rollback(context.Background()) }

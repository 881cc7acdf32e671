package store

import (
	"database/sql"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Wrap turns a caller's transaction (or connection) into a [Querier] in the store's dialect,
// so a twice operation commits or rolls back with the caller's business write. It accepts
// *sql.Tx, *sql.Conn and *sql.DB (SQLite, or PostgreSQL through pgx's stdlib), pgx.Tx,
// *pgx.Conn and *pgxpool.Pool, and any [Querier].
func (s *Store) Wrap(tx any) (Querier, error) {
	q, err := Wrap(tx, s.Dialect())
	switch w := q.(type) {
	case sqlQuerier:
		w.obs = s.obs
		return w, err
	case pgxQuerier:
		w.obs = s.obs
		return w, err
	}
	return q, err
}

// Wrap is [Store.Wrap] for a caller that knows the dialect but holds no store.
func Wrap(tx any, d Dialect) (Querier, error) {
	switch t := tx.(type) {
	case nil:
		return nil, fmt.Errorf("store: nil transaction")
	case Querier:
		return t, nil
	case *sql.Tx:
		return sqlQuerier{db: t, dialect: d}, nil
	case *sql.Conn:
		return sqlQuerier{db: t, dialect: d}, nil
	case *sql.DB:
		return sqlQuerier{db: t, dialect: d}, nil
	}
	if d != Postgres {
		return nil, fmt.Errorf("store: a %T cannot join a %s transaction", tx, d)
	}
	switch t := tx.(type) {
	case pgx.Tx:
		return pgxQuerier{q: t}, nil
	case *pgx.Conn:
		return pgxQuerier{q: t}, nil
	case *pgxpool.Pool:
		return pgxQuerier{q: t}, nil
	case *pgxpool.Conn:
		return pgxQuerier{q: t}, nil
	}
	return nil, fmt.Errorf("store: cannot run queries on a %T; pass a *sql.Tx, pgx.Tx or store.Tx", tx)
}

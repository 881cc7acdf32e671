package session

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/twicehq/twice/store"
)

// SCSStore lets an application that uses github.com/alexedwards/scs/v2 keep its sessions in
// twice's database with one line:
//
//	sessionManager.Store = node.Sessions().SCSStore()
//
// It implements scs's Store and CtxStore interfaces. Tokens are stored as their SHA-256,
// like twice's own sessions, which is why it does not implement IterableStore (All would
// have to return tokens). Expired rows are pruned by the leader with [Sessions.Prune].
//
// The adapter moves scs's sessions to the shared database, so every instance sees them;
// it cannot change scs's model, which saves a whole session at once: two concurrent
// requests of one session that change different keys still lose one change under scs. Use
// [Sessions.Middleware] where that matters.
type SCSStore struct {
	m *Sessions
}

// SCSStore returns the scs adapter on these sessions' store and service.
func (m *Sessions) SCSStore() *SCSStore { return &SCSStore{m: m} }

func scsHash(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

// FindCtx returns the data of the session with token, if it has not expired (in
// database time).
func (a *SCSStore) FindCtx(ctx context.Context, token string) ([]byte, bool, error) {
	m := a.m
	var b []byte
	err := m.s.Reader().QueryRow(ctx, m.q.scsFind, m.s.NowArg(), m.d.Service, scsHash(token)).Scan(&b)
	if errors.Is(err, store.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("session: scs find: %w", err)
	}
	return b, true, nil
}

// CommitCtx stores the session's data until expiry (scs computes it with the instance's
// clock).
func (a *SCSStore) CommitCtx(ctx context.Context, token string, b []byte, expiry time.Time) error {
	m := a.m
	if _, err := m.s.Exec(ctx, m.q.scsCommit, m.d.Service, scsHash(token), b, m.s.TimeArg(expiry)); err != nil {
		return fmt.Errorf("session: scs commit: %w", err)
	}
	return nil
}

// DeleteCtx removes the session with token.
func (a *SCSStore) DeleteCtx(ctx context.Context, token string) error {
	m := a.m
	if _, err := m.s.Exec(ctx, m.q.scsDelete, m.d.Service, scsHash(token)); err != nil {
		return fmt.Errorf("session: scs delete: %w", err)
	}
	return nil
}

// Find implements scs.Store.
func (a *SCSStore) Find(token string) ([]byte, bool, error) {
	return a.FindCtx(context.Background(), token)
}

// Commit implements scs.Store.
func (a *SCSStore) Commit(token string, b []byte, expiry time.Time) error {
	return a.CommitCtx(context.Background(), token, b, expiry)
}

// Delete implements scs.Store.
func (a *SCSStore) Delete(token string) error {
	return a.DeleteCtx(context.Background(), token)
}

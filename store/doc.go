// Package store is where twice meets its two SQL dialects: it opens SQLite (the embedded
// default, one file shared by every local instance) or PostgreSQL, hands out
// queriers and transactions that behave alike on both, joins a caller's own transaction,
// gives database time, and applies each building block's embedded migrations under a lock.
//
// Building blocks keep their own SQL next to their code, each statement written once with
// the template markers [Store.SQL] expands for the store's dialect, and run it through a
// [Querier]. Placeholders are $1, $2, … in both dialects. Timestamps are timestamptz on
// PostgreSQL and integer microseconds on SQLite; [Time] scans either, [Dialect.TimeArg]
// binds either, and a statement's {now} is database time that tests can stub with a
// [Clock] (bound with [Store.NowArg]).
package store

package store

import (
	"fmt"
	"time"
)

// Time scans a timestamp column of either dialect: timestamptz on PostgreSQL, integer
// microseconds since the epoch on SQLite. A NULL leaves the zero time.
type Time struct{ time.Time }

// Scan implements sql.Scanner.
func (t *Time) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		t.Time = time.Time{}
	case time.Time:
		t.Time = v
	case int64:
		t.Time = time.UnixMicro(v)
	case float64:
		t.Time = time.UnixMicro(int64(v))
	default:
		return fmt.Errorf("store: cannot scan %T into a time", src)
	}
	return nil
}

// Micros scans a duration measured by the database in microseconds, as a statement's
// {age LATER, EARLIER} marker computes it (see [Store.SQL]).
type Micros struct{ time.Duration }

// Scan implements sql.Scanner.
func (m *Micros) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		m.Duration = 0
	case int64:
		m.Duration = time.Duration(v) * time.Microsecond
	case float64:
		m.Duration = time.Duration(v * float64(time.Microsecond))
	default:
		return fmt.Errorf("store: cannot scan %T into a duration", src)
	}
	return nil
}

package store

import "testing"

// takesBatch finds a parameter cast to an array type, as twice writes a batch's (and as
// {in $N TYPE} expands on PostgreSQL), and nothing else.
func TestTakesBatch(t *testing.T) {
	for q, want := range map[string]bool{
		"SELECT * FROM unnest($3::int[], $4::bigint[])":     true,
		"UPDATE t SET x = 1 WHERE id = ANY($6::bigint[])":   true,
		"SELECT $2::double precision[]":                     true,
		"SELECT 1":                                          false,
		"SELECT $1::text, $2::bigint":                       false,
		"SELECT '{}'::text[]":                               false, // a literal, no parameter
		"SELECT array_agg(x)::bigint[] FROM t WHERE y = $1": false,
	} {
		if got := takesBatch(q); got != want {
			t.Errorf("takesBatch(%q) = %v, want %v", q, got, want)
		}
	}
}

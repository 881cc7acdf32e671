package occ_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"

	"github.com/twicehq/twice/internal/testdb"
	"github.com/twicehq/twice/occ"
	"github.com/twicehq/twice/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func setup(t testing.TB, db testdb.DB) (*store.Store, *occ.Versions) {
	t.Helper()
	s := db.Open(t, nil)
	if _, err := s.Exec(context.Background(), "CREATE TABLE docs (id INTEGER PRIMARY KEY, title TEXT NOT NULL, version BIGINT NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Exec(context.Background(), "INSERT INTO docs VALUES (1, 'first', 1)"); err != nil {
		t.Fatal(err)
	}
	return s, occ.New(s)
}

func TestVersions(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		s, v := setup(t, db)
		ctx := context.Background()
		key := map[string]any{"id": 1}
		next, err := v.Update(ctx, occ.UpdateParams{Table: "docs", Key: key, Set: map[string]any{"title": "second"}, Version: 1})
		if err != nil || next != 2 {
			t.Fatalf("Update = %d, %v", next, err)
		}
		_, err = v.Update(ctx, occ.UpdateParams{Table: "docs", Key: key, Set: map[string]any{"title": "stale"}, Version: 1})
		var ce *occ.ConflictError
		if !errors.Is(err, occ.ErrConflict) || !errors.As(err, &ce) || ce.Expected != 1 || ce.Actual != 2 {
			t.Fatalf("stale Update = %v", err)
		}
		var title string
		if err := s.QueryRow(ctx, "SELECT title FROM docs WHERE id = 1").Scan(&title); err != nil || title != "second" {
			t.Errorf("title %q, %v: a stale update applied", title, err)
		}
		if _, err := v.Update(ctx, occ.UpdateParams{Table: "docs", Key: map[string]any{"id": 9}, Set: map[string]any{"title": "x"}, Version: 1}); !errors.Is(err, occ.ErrNotFound) {
			t.Errorf("missing row: %v", err)
		}
		for _, p := range []occ.UpdateParams{
			{Table: "docs; DROP TABLE docs", Key: key, Set: map[string]any{"title": "x"}},
			{Table: "docs", Key: key, Set: map[string]any{`title" = 'x' --`: "x"}},
			{Table: "docs", Key: key, Set: map[string]any{"version": 7}},
			{Table: "docs", Key: key},
			{Table: "docs", Set: map[string]any{"title": "x"}},
		} {
			if _, err := v.Update(ctx, p); err == nil || errors.Is(err, occ.ErrConflict) {
				t.Errorf("Update(%+v) = %v, want a usage error", p, err)
			}
		}
		// In the caller's transaction; a rollback undoes it.
		err = s.InTx(ctx, func(tx store.Tx) error {
			if _, err := v.UpdateTx(ctx, tx, occ.UpdateParams{Table: "docs", Key: key, Set: map[string]any{"title": "t"}, Version: 2}); err != nil {
				return err
			}
			return errors.New("rollback")
		})
		if err == nil || err.Error() != "rollback" {
			t.Fatal(err)
		}
		// Of many writers that read the same version, exactly one wins.
		var wins atomic.Int32
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				_, err := v.Update(ctx, occ.UpdateParams{Table: "docs", Key: key, Set: map[string]any{"title": fmt.Sprint(i)}, Version: 2})
				switch {
				case err == nil:
					wins.Add(1)
				case !errors.Is(err, occ.ErrConflict):
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if wins.Load() != 1 {
			t.Errorf("%d writers of version 2 succeeded, want 1", wins.Load())
		}
		if err := v.Delete(ctx, occ.DeleteParams{Table: "docs", Key: key, Version: 2}); !errors.Is(err, occ.ErrConflict) {
			t.Errorf("stale Delete = %v", err)
		}
		if err := v.Delete(ctx, occ.DeleteParams{Table: "docs", Key: key, Version: 3}); err != nil {
			t.Errorf("Delete = %v", err)
		}
	})
}

// docServer serves /doc: GET returns the title with its ETag, PUT changes it under the
// version If-Match matched.
func docServer(t testing.TB, s *store.Store, v *occ.Versions, cfg occ.HTTPConfig, meddle func()) http.Handler {
	current := func(r *http.Request) (int64, bool, error) {
		var ver int64
		err := s.Reader().QueryRow(r.Context(), "SELECT version FROM docs WHERE id = 1").Scan(&ver)
		if errors.Is(err, store.ErrNoRows) {
			return 0, false, nil
		}
		return ver, err == nil, err
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet:
			var title string
			var ver int64
			if err := s.QueryRow(r.Context(), "SELECT title, version FROM docs WHERE id = 1").Scan(&title, &ver); err != nil {
				t.Error(err)
			}
			occ.SetETag(w, ver)
			_, _ = w.Write([]byte(title))
		case http.MethodPut:
			expected, ok := occ.Expected(r.Context())
			if !ok {
				http.Error(w, "no If-Match", http.StatusBadRequest)
				return
			}
			if meddle != nil {
				meddle()
			}
			next, err := v.Update(r.Context(), occ.UpdateParams{Table: "docs", Key: map[string]any{"id": 1},
				Set: map[string]any{"title": r.URL.Query().Get("title")}, Version: expected})
			if occ.WriteError(w, err) {
				return
			}
			if err != nil {
				t.Error(err)
			}
			occ.SetETag(w, next)
			w.WriteHeader(http.StatusNoContent)
		}
	})
	return occ.Preconditions(cfg, current)(h)
}

func request(h http.Handler, method, target string, header ...string) *http.Response {
	r := httptest.NewRequest(method, target, nil)
	for i := 0; i < len(header); i += 2 {
		r.Header.Add(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Result()
}

func TestPreconditions(t *testing.T) {
	testdb.Each(t, func(t *testing.T, db testdb.DB) {
		t.Parallel()
		s, v := setup(t, db)
		h := docServer(t, s, v, occ.HTTPConfig{RequireIfMatch: true, Logger: testdb.Logger(t)}, nil)

		res := request(h, http.MethodGet, "/doc")
		etag := res.Header.Get("ETag")
		if res.StatusCode != 200 || etag != `"1"` {
			t.Fatalf("GET: %d %q", res.StatusCode, etag)
		}
		for _, inm := range []string{etag, `W/"1"`, `"0", "1"`, "*"} {
			if res := request(h, http.MethodGet, "/doc", "If-None-Match", inm); res.StatusCode != 304 || res.Header.Get("ETag") != etag {
				t.Errorf("If-None-Match %s: %d", inm, res.StatusCode)
			}
		}
		if res := request(h, http.MethodGet, "/doc", "If-None-Match", `"0"`); res.StatusCode != 200 {
			t.Errorf("stale If-None-Match: %d", res.StatusCode)
		}
		for _, c := range []struct {
			name   string
			header []string
			want   int
		}{
			{"no If-Match", nil, 428},
			{"weak tag", []string{"If-Match", `W/"1"`}, 412},
			{"other version", []string{"If-Match", `"7"`}, 412},
			{"malformed", []string{"If-Match", `1`}, 400},
			{"If-None-Match * on an existing resource", []string{"If-Match", etag, "If-None-Match", "*"}, 412},
			{"current version", []string{"If-Match", `"5", ` + etag}, 204},
			{"the old version again", []string{"If-Match", etag}, 412},
			{"star", []string{"If-Match", "*"}, 204},
		} {
			if res := request(h, http.MethodPut, "/doc?title=x", c.header...); res.StatusCode != c.want {
				t.Errorf("PUT with %s: %d, want %d", c.name, res.StatusCode, c.want)
			}
		}
		// A change between the check and the update is refused by the update itself.
		meddler := docServer(t, s, v, occ.HTTPConfig{}, func() {
			if _, err := s.Exec(context.Background(), "UPDATE docs SET version = version + 1 WHERE id = 1"); err != nil {
				t.Error(err)
			}
		})
		var ver int64
		if err := s.QueryRow(context.Background(), "SELECT version FROM docs WHERE id = 1").Scan(&ver); err != nil {
			t.Fatal(err)
		}
		if res := request(meddler, http.MethodPut, "/doc?title=lost", "If-Match", occ.ETag(ver)); res.StatusCode != 412 {
			t.Errorf("update after a concurrent change: %d, want 412", res.StatusCode)
		}
		if res := request(h, http.MethodPut, "/doc?title=lost", "If-Match", "*"); res.StatusCode != 204 {
			t.Errorf("PUT: %d", res.StatusCode)
		}
	})
}

// fuzzCondition checks parse never accepts garbage and match agrees with the comparison
// function of RFC 9110, 8.8.3.2: strong (weak tags never match) or weak.
func fuzzCondition(f *testing.F, parse func([]string) (occ.Condition, bool, error), match func(occ.Condition, string) bool, weak bool) {
	for _, s := range []string{`"1"`, `W/"1"`, `*`, `"a", W/"b" ,, "c"`, `"`, `W/`, `"a" "b"`, `" "`, "\"\x80\"", `*, "1"`, ``, `,`} {
		f.Add(s, int64(1))
	}
	f.Fuzz(func(t *testing.T, v string, version int64) {
		c, ok, err := parse([]string{v})
		if !ok {
			t.Fatal("a present header reported absent")
		}
		if err != nil {
			if !errors.Is(err, occ.ErrBadCondition) {
				t.Fatalf("%q: %v", v, err)
			}
			return
		}
		if !c.Any && len(c.Tags) == 0 {
			t.Fatalf("%q parsed to an empty condition", v)
		}
		// Formatting the tags again gives the same condition.
		var parts []string
		for _, tag := range c.Tags {
			parts = append(parts, tag.String())
		}
		if !c.Any {
			again, _, err := parse([]string{strings.Join(parts, ", ")})
			if err != nil || len(again.Tags) != len(c.Tags) {
				t.Fatalf("%q: re-parsed %v: %v", v, again, err)
			}
		}
		etag := occ.ETag(version)
		want := c.Any
		for _, tag := range c.Tags {
			if tag.Opaque == strconv.FormatInt(version, 10) && (weak || !tag.Weak) {
				want = true
			}
		}
		if got := match(c, etag); got != want {
			t.Fatalf("%q against %s: %v, want %v", v, etag, got, want)
		}
	})
}

func FuzzIfMatch(f *testing.F) {
	fuzzCondition(f, occ.ParseIfMatch, occ.Condition.MatchStrong, false)
}

func FuzzIfNoneMatch(f *testing.F) {
	fuzzCondition(f, occ.ParseIfNoneMatch, occ.Condition.MatchWeak, true)
}

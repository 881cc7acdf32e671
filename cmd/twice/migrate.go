package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/store"
)

func migrateCmd(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: migrate needs up, down, status or sql", errUsage)
	}
	sub, rest := args[0], args[1:]
	fs := flag.NewFlagSet("migrate "+sub, flag.ContinueOnError)
	var db dbFlags
	db.register(fs)
	comps := twice.Components()
	switch sub {
	case "up":
		if err := parse(fs, rest); err != nil {
			return err
		}
		s, err := db.open(ctx, false)
		if err != nil {
			return err
		}
		defer s.Close()
		steps, err := store.NewMigrator(s, comps...).Up(ctx)
		if err != nil {
			return err
		}
		for _, st := range steps {
			fmt.Fprintln(stdout, "applied", st)
		}
		if len(steps) == 0 {
			fmt.Fprintln(stdout, "up to date:", s)
		}
		return nil
	case "down":
		n := fs.Int("steps", 1, "how many migrations to undo, newest first")
		all := fs.Bool("all", false, "undo every migration (drops all of twice's tables)")
		if err := parse(fs, rest); err != nil {
			return err
		}
		if *n < 1 && !*all {
			return fmt.Errorf("%w: migrate down: --steps must be at least 1", errUsage)
		}
		if *all {
			*n = 0
		}
		s, err := db.open(ctx, true)
		if err != nil {
			return err
		}
		defer s.Close()
		steps, err := store.NewMigrator(s, comps...).Down(ctx, *n)
		if err != nil {
			return err
		}
		for _, st := range steps {
			fmt.Fprintln(stdout, "undone", st)
		}
		if len(steps) == 0 {
			fmt.Fprintln(stdout, "nothing to undo:", s)
		}
		return nil
	case "status":
		asJSON := fs.Bool("json", false, "print JSON")
		if err := parse(fs, rest); err != nil {
			return err
		}
		s, err := db.open(ctx, true)
		if err != nil {
			return err
		}
		defer s.Close()
		steps, err := store.NewMigrator(s, comps...).Status(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, map[string]any{"dsn": s.String(), "migrations": steps})
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "COMPONENT\tVERSION\tNAME\tAPPLIED")
		for _, st := range steps {
			at := "pending"
			if st.Applied {
				at = st.AppliedAt.UTC().Format("2006-01-02 15:04:05Z")
			}
			fmt.Fprintf(tw, "%s\t%04d\t%s\t%s\n", st.Component, st.Version, st.Name, at)
		}
		return tw.Flush()
	case "sql":
		dialect := fs.String("dialect", "", "print every migration for this dialect (postgres or sqlite) without a database")
		if err := parse(fs, rest); err != nil {
			return err
		}
		if *dialect != "" {
			if db.dsn != "" {
				return fmt.Errorf("%w: migrate sql: give --dsn or --dialect, not both", errUsage)
			}
			d := store.Dialect(*dialect)
			if d != store.Postgres && d != store.SQLite {
				return fmt.Errorf("%w: migrate sql: --dialect must be postgres or sqlite, not %q", errUsage, *dialect)
			}
			fmt.Fprint(stdout, store.Script(d, comps, nil))
			return nil
		}
		// With a database: only what it still needs.
		s, err := db.open(ctx, false)
		if err != nil {
			return err
		}
		defer s.Close()
		pending, err := store.NewMigrator(s, comps...).Pending(ctx)
		if err != nil {
			return err
		}
		if len(pending) == 0 {
			fmt.Fprintln(stdout, "-- up to date:", s)
			return nil
		}
		fmt.Fprint(stdout, store.Script(s.Dialect(), comps, pending))
		return nil
	default:
		return fmt.Errorf("%w: unknown migrate command %q", errUsage, sub)
	}
}

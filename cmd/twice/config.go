package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/bus"
	"github.com/twicehq/twice/internal/block"
	"github.com/twicehq/twice/settings"
	"github.com/twicehq/twice/store"
)

// configCmd reads and changes a service's cluster-wide settings.
func configCmd(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: config needs get, set, delete, list or history", errUsage)
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("config "+sub, flag.ContinueOnError)
	var db dbFlags
	db.register(fs)
	service := fs.String("service", os.Getenv(twice.EnvService), "the service whose settings these are (default $"+twice.EnvService+"; required)")
	asJSON := fs.Bool("json", false, "print JSON")
	var typ, actor *string
	var ifVersion, limit *int64
	switch sub {
	case "set", "delete":
		if sub == "set" {
			typ = fs.String("type", "", "the value's type: string, int, float, bool, duration or json (default: the key's type)")
		}
		actor = fs.String("actor", os.Getenv("USER"), "who makes the change, for the history")
		ifVersion = fs.Int64("if-version", -1, "change only if the key is at this version (0: not set yet)")
	case "history":
		limit = fs.Int64("limit", 20, "how many changes to show")
	case "get", "list":
	default:
		return fmt.Errorf("%w: unknown config command %q", errUsage, sub)
	}
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	want := map[string][2]int{"get": {1, 1}, "set": {2, 2}, "delete": {1, 1}, "list": {0, 1}, "history": {0, 1}}[sub]
	if len(pos) < want[0] || len(pos) > want[1] {
		return fmt.Errorf("%w: config %s takes %s", errUsage, sub,
			map[string]string{"get": "KEY", "set": "KEY VALUE", "delete": "KEY", "list": "[PREFIX]", "history": "[KEY]"}[sub])
	}
	if *service == "" {
		return fmt.Errorf("%w: config %s: --service (or $%s) is required", errUsage, sub, twice.EnvService)
	}
	if sub != "list" && len(pos) > 0 {
		if err := settings.CheckKey(pos[0]); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
	}
	if limit != nil && (*limit < 1 || *limit > 10000) {
		return fmt.Errorf("%w: config history: --limit must be 1 to 10000", errUsage)
	}

	s, err := db.open(ctx, true)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := store.NewMigrator(s, twice.Components()...).Check(ctx); err != nil {
		return fmt.Errorf("%s: %w (run `twice migrate up`, or start an instance)", s, err)
	}
	c := configRun{s: s, service: *service, asJSON: *asJSON, out: stdout}
	switch sub {
	case "get":
		return c.get(ctx, pos[0])
	case "list":
		return c.list(ctx, strings.Join(pos, ""))
	case "history":
		return c.history(ctx, strings.Join(pos, ""), int(*limit))
	}
	opts := &settings.SetOpts{Actor: *actor}
	if *ifVersion >= 0 {
		opts.IfVersion = ifVersion
	}
	if sub == "delete" {
		return c.change(ctx, pos[0], nil, opts)
	}
	return c.change(ctx, pos[0], &typedText{typ: *typ, text: pos[1]}, opts)
}

type typedText struct{ typ, text string }

type configRun struct {
	s       *store.Store
	service string
	asJSON  bool
	out     io.Writer
}

// open loads the service's settings; with announce, changes are also signalled on the
// service's bus so running instances apply them at once rather than at their next poll.
func (c configRun) open(ctx context.Context, announce bool) (*settings.Settings, func(), error) {
	instance := toolInstance("twice-cli")
	var b bus.Bus
	if announce {
		var err error
		if b, err = toolBus(ctx, c.s, c.service, instance); err != nil {
			return nil, nil, err
		}
	}
	st, err := settings.New(block.Deps{Store: c.s, Bus: b, Service: c.service, Instance: instance}, settings.Config{})
	if err == nil {
		// A command reads once: load now, and fail if that fails, with no poll behind it.
		err = st.Refresh(ctx)
	}
	if err != nil {
		if b != nil {
			_ = b.Close(ctx)
		}
		return nil, nil, err
	}
	return st, func() {
		_ = st.Close(ctx)
		if b != nil {
			_ = b.Close(ctx)
		}
	}, nil
}

func (c configRun) json(v any) error {
	return printJSON(c.out, v)
}

func (c configRun) get(ctx context.Context, key string) error {
	st, done, err := c.open(ctx, false)
	if err != nil {
		return err
	}
	defer done()
	v, ok := st.Get(key)
	if !ok {
		return fmt.Errorf("%w: %q in service %s", settings.ErrNotFound, key, c.service)
	}
	if c.asJSON {
		return c.json(v)
	}
	fmt.Fprintln(c.out, v.Text)
	return nil
}

func (c configRun) list(ctx context.Context, prefix string) error {
	st, done, err := c.open(ctx, false)
	if err != nil {
		return err
	}
	defer done()
	vs := st.List(prefix)
	if c.asJSON {
		if vs == nil {
			vs = []settings.Setting{}
		}
		return c.json(vs)
	}
	if len(vs) == 0 {
		fmt.Fprintf(c.out, "no settings in service %s\n", c.service)
		return nil
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tTYPE\tVERSION\tUPDATED\tBY\tVALUE")
	for _, v := range vs {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", v.Key, v.Type, v.Version, v.UpdatedAt.Local().Format(time.DateTime),
			who(v), shorten(v.Text, 60))
	}
	return tw.Flush()
}

func (c configRun) history(ctx context.Context, key string, limit int) error {
	st, done, err := c.open(ctx, false)
	if err != nil {
		return err
	}
	defer done()
	h, err := st.History(ctx, key, limit)
	if err != nil {
		return err
	}
	if c.asJSON {
		if h == nil {
			h = []settings.Setting{}
		}
		return c.json(h)
	}
	if len(h) == 0 {
		fmt.Fprintf(c.out, "no changes in service %s\n", c.service)
		return nil
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "AT\tKEY\tVERSION\tBY\tCHANGE")
	for _, v := range h {
		change := "set " + string(v.Type) + " " + shorten(v.Text, 60)
		if v.Deleted {
			change = "deleted"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", v.UpdatedAt.Local().Format("2006-01-02 15:04:05.000"), v.Key, v.Version, who(v), change)
	}
	return tw.Flush()
}

// change sets key to tt, or deletes it when tt is nil.
func (c configRun) change(ctx context.Context, key string, tt *typedText, opts *settings.SetOpts) error {
	st, done, err := c.open(ctx, true)
	if err != nil {
		return err
	}
	defer done()
	var v settings.Setting
	if tt == nil {
		v, err = st.Delete(ctx, key, opts)
	} else {
		typ := settings.Type(tt.typ)
		if typ == "" {
			cur, ok := st.Get(key)
			if !ok {
				return fmt.Errorf("%w: %q is not set yet: give its type with --type string, int, float, bool, duration or json", errUsage, key)
			}
			typ = cur.Type
		}
		value, perr := settings.Parse(typ, tt.text)
		if perr != nil {
			return fmt.Errorf("%w: %v", errUsage, perr)
		}
		v, err = st.Set(ctx, key, value, opts)
	}
	if err != nil {
		return err
	}
	if c.asJSON {
		return c.json(v)
	}
	if v.Deleted {
		fmt.Fprintf(c.out, "%s deleted (version %d)\n", key, v.Version)
	} else {
		fmt.Fprintf(c.out, "%s = %s (%s, version %d)\n", key, shorten(v.Text, 200), v.Type, v.Version)
	}
	return nil
}

func who(v settings.Setting) string {
	if v.Actor != "" {
		return v.Actor + " via " + v.Instance
	}
	return v.Instance
}

func shorten(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/cluster"
)

func statusCmd(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	var db dbFlags
	db.register(fs)
	service := fs.String("service", os.Getenv(twice.EnvService), "only this service (default $"+twice.EnvService+", then every service in the database)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	s, err := db.open(ctx, true)
	if err != nil {
		return err
	}
	defer s.Close()
	sts, err := twice.Status(ctx, s, *service)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, map[string]any{"dsn": s.String(), "services": sts})
	}
	printStatus(stdout, s.String(), sts)
	return nil
}

func printStatus(w io.Writer, dsn string, sts []twice.ServiceStatus) {
	if len(sts) == 0 {
		fmt.Fprintf(w, "no instances in %s\n", dsn)
		return
	}
	for i, st := range sts {
		if i > 0 {
			fmt.Fprintln(w)
		}
		leader := "none"
		if st.Leader != "" {
			leader = fmt.Sprintf("%s (token %d)", st.Leader, st.LeaderToken)
		}
		fmt.Fprintf(w, "service %s: %d instances, leader %s, availability: %s\n", st.Service, len(st.Members), leader, st.Requests)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  \tINSTANCE\tSTATE\tHEARTBEAT\tUP\tHEALTH\tAVAIL\tHOST\tPID\tVERSION\tADDR")
		for _, m := range st.Members {
			mark := ""
			if m.Leader {
				mark = "*"
			}
			reqs := "-"
			if m.Report != nil {
				reqs = m.Report.Requests.String()
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s ago\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", mark, m.ID, m.State,
				round(m.HeartbeatAge), round(m.Uptime), healthText(m.Report), reqs, m.Host, m.PID, m.Version, m.Addr)
		}
		_ = tw.Flush()
		if len(st.Locks) > 0 {
			fmt.Fprintln(w, "  locks held:")
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "    \tNAME\tHOLDER\tTOKEN\tEXPIRES IN")
			for _, l := range st.Locks {
				fmt.Fprintf(tw, "    \t%s\t%s\t%d\t%s\n", l.Name, l.Holder, l.Token, round(l.Remaining))
			}
			_ = tw.Flush()
		}
		if len(st.Partitions) > 0 {
			fmt.Fprintln(w, "  partition sets:")
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "    \tSET\tMEMBERS\tPARTITIONS HELD BY INSTANCE")
			for _, p := range st.Partitions {
				ids := slices.Sorted(maps.Keys(p.Held))
				held := make([]string, 0, len(ids))
				for _, id := range ids {
					held = append(held, fmt.Sprintf("%s %d", id, p.Held[id]))
				}
				fmt.Fprintf(tw, "    \t%s\t%d\t%s\n", p.Set, len(p.Members), strings.Join(held, ", "))
			}
			_ = tw.Flush()
		}
	}
}

// healthText sums up an instance's health checks as it reported them: "ok", the failing
// checks, "-" when none has run on it (nothing probed it), or when it reports nothing.
func healthText(r *cluster.Report) string {
	switch failing := r.Failing(); {
	case r == nil || len(r.Checks) == 0:
		return "-"
	case len(failing) > 0:
		return "failing:" + strings.Join(failing, ",")
	default:
		return "ok"
	}
}

// round shortens d for a table: milliseconds under a second, then seconds, then minutes.
func round(d time.Duration) time.Duration {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond)
	case d < time.Minute:
		return d.Round(100 * time.Millisecond)
	default:
		return d.Round(time.Second)
	}
}

package instance

import "time"

// Term is one instance's belief that it led: from its election to its demotion, or its
// death (the "exited" event), or until.
type Term struct {
	Proc       int
	ID         string
	Token      int64
	Start, End time.Time
}

// Terms reconstructs every leadership term from a group's events.
func Terms(log []Event, until time.Time) []Term {
	var out []Term
	for i, ev := range log {
		if ev.Event != "elected" {
			continue
		}
		tm := Term{Proc: ev.Proc, ID: ev.ID, Token: ev.Token, Start: ev.Time(), End: until}
		for _, later := range log[i+1:] {
			if later.Proc == ev.Proc && (later.Event == "demoted" && later.Token == ev.Token || later.Event == "exited") {
				tm.End = later.Time()
				break
			}
		}
		out = append(out, tm)
	}
	return out
}

// Overlap is how long both terms held at once; zero or negative if never.
func (a Term) Overlap(b Term) time.Duration {
	end, start := a.End, a.Start
	if b.End.Before(end) {
		end = b.End
	}
	if b.Start.After(start) {
		start = b.Start
	}
	return end.Sub(start)
}

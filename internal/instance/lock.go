package instance

import "context"

// Lock is the workload "lock": the instance takes the lock LockName at start, reports it as
// "locked" with its token, and holds it until it exits.
type Lock struct {
	LockName string `json:"lock_name"`
}

// Name implements Workload.
func (Lock) Name() string { return "lock" }

func (w Lock) start(ctx context.Context, in *env) (func(), error) {
	k, err := in.node.Locks().Acquire(ctx, w.LockName, nil)
	if err != nil {
		return nil, err
	}
	in.emit(Event{Event: "locked", Token: k.Token()})
	return func() {}, nil
}

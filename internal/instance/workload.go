package instance

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"

	"github.com/twicehq/twice"
)

// A Workload is something a child instance does besides being a node: write as the leader,
// hold a lock, consume events, work jobs, serve HTTP. Each is a struct whose exported fields
// are its parameters, registered under its name in [workloads]; a parent lists the
// workloads of its instances in [Options.Workloads], which carries each to the child by
// name, and the child looks the name up.
type Workload interface {
	// Name is the name the workload is registered under.
	Name() string
	// start starts the workload on the instance. stop, called before the node closes, ends
	// what start began and waits for it.
	start(ctx context.Context, in *env) (stop func(), err error)
}

// configurer is a workload that changes the node's configuration before it opens.
type configurer interface {
	configure(cfg *twice.Config)
}

// workloads are every workload an instance can run, by name.
var workloads = register(
	FencedWriter{}, PartitionWrites{}, Lock{}, Consume{}, Jobs{}, IdempotencyHTTP{}, CacheWriter{}, Propagation{}, Idle{}, Members{}, Presence{}, Realtime{}, Workflows{},
	CheckRegister{}, CheckLocks{}, CheckPartitions{}, CheckEvents{}, CheckJobs{}, CheckWorkflows{}, CheckConverge{}, CheckHTTP{},
	WorkflowBench{},
)

func register(ws ...Workload) map[string]reflect.Type {
	m := map[string]reflect.Type{}
	for _, w := range ws {
		if _, dup := m[w.Name()]; dup {
			panic("instance: two workloads named " + w.Name())
		}
		m[w.Name()] = reflect.TypeOf(w)
	}
	return m
}

// named is a workload as it travels to the child: its name and its parameters.
type named struct {
	Name   string          `json:"name"`
	Params json.RawMessage `json:"params,omitempty"`
}

// options is Options without its JSON methods.
type options Options

type wireOptions struct {
	options
	Workloads []named `json:"workloads,omitempty"`
}

// MarshalJSON encodes o with each workload as its registered name and its parameters.
func (o Options) MarshalJSON() ([]byte, error) {
	w := wireOptions{options: options(o)}
	for _, wl := range o.Workloads {
		if t, ok := workloads[wl.Name()]; !ok || t != reflect.TypeOf(wl) {
			return nil, fmt.Errorf("instance: workload %q (%T) is not registered", wl.Name(), wl)
		}
		p, err := json.Marshal(wl)
		if err != nil {
			return nil, err
		}
		w.Workloads = append(w.Workloads, named{Name: wl.Name(), Params: p})
	}
	return json.Marshal(w)
}

// UnmarshalJSON decodes what [Options.MarshalJSON] encodes, looking each workload up by name.
func (o *Options) UnmarshalJSON(b []byte) error {
	var w wireOptions
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*o = Options(w.options)
	o.Workloads = nil
	for _, n := range w.Workloads {
		t, ok := workloads[n.Name]
		if !ok {
			return fmt.Errorf("instance: no workload is named %q", n.Name)
		}
		p := reflect.New(t)
		if len(n.Params) > 0 {
			if err := json.Unmarshal(n.Params, p.Interface()); err != nil {
				return fmt.Errorf("instance: workload %s: %w", n.Name, err)
			}
		}
		o.Workloads = append(o.Workloads, p.Elem().Interface().(Workload))
	}
	return nil
}

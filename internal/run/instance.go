package run

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/twicehq/twice/internal/faultproxy"
	"golang.org/x/sys/unix"
)

// Restart is what happens to an instance that exits by itself.
type Restart string

const (
	// Never leaves it stopped (a rolling restart starts it again).
	Never Restart = "never"
	// OnFailure starts it again, with backoff, unless it exited with status 0.
	OnFailure Restart = "on-failure"
	// Always starts it again, with backoff.
	Always Restart = "always"
)

// ParseRestart reads a restart policy: never, on-failure or always.
func ParseRestart(s string) (Restart, error) {
	switch r := Restart(s); r {
	case Never, OnFailure, Always:
		return r, nil
	}
	return "", fmt.Errorf("run: restart policy %q: want never, on-failure or always", s)
}

// Restart backoff: the first restart waits backoffMin, each one after a short life twice as
// long, up to backoffMax. An instance that ran backoffReset or longer starts over.
const (
	backoffMin   = 250 * time.Millisecond
	backoffMax   = 10 * time.Second
	backoffReset = 30 * time.Second
)

// State is where an instance is in its life.
type State string

// The states of an instance.
const (
	Starting  State = "starting"  // running, not yet passed a health check
	Ready     State = "ready"     // receives traffic
	Unhealthy State = "unhealthy" // running, failing its checks or its requests: no traffic
	Paused    State = "paused"    // stopped by chaos with SIGSTOP
	Draining  State = "draining"  // taken out of the balancer for a restart
	Down      State = "down"      // not running
)

// instance is one slot: the process in it now and what the balancer knows of it.
type instance struct {
	slot    int
	port    int
	env     []string
	dbProxy *faultproxy.Proxy // nil unless chaos may cut its database
	revive  chan struct{}     // a rolling restart asks a stopped slot to start

	// guarded by Runner.mu:
	cmd      *exec.Cmd
	pid      int           // 0 while no process runs
	exited   chan struct{} // closed when the process of pid has been waited for
	gen      int           // how many processes the slot has started
	healthy  bool          // passed its last health check and failed no FailAfter requests since
	everUp   bool          // the current process has passed a check
	draining bool          // taken out of the balancer
	paused   bool
	planned  bool // the current process is being stopped on purpose: no restart policy
	fails    int  // requests in a row it failed to answer
	inflight int  // requests passed to it, not yet answered
	restarts int
	requests int64
	failures int64

	logsMu sync.Mutex // protects logs
	logs   []*os.File // read ends of the output pipes of processes still writing
	logsWG sync.WaitGroup
}

// state is the instance's state; r.mu must be held.
func (in *instance) state() State {
	switch {
	case in.pid == 0:
		return Down
	case in.paused:
		return Paused
	case in.draining:
		return Draining
	case in.healthy:
		return Ready
	case !in.everUp:
		return Starting
	}
	return Unhealthy
}

// eligible says whether the balancer may send it a request; r.mu must be held.
func (in *instance) eligible() bool {
	return in.pid != 0 && in.healthy && !in.draining && !in.paused
}

// supervise runs the slot's processes one after the other until the runner stops, applying
// the restart policy to those that exit by themselves.
func (r *Runner) supervise(in *instance) {
	backoff := backoffMin
	for {
		started := time.Now()
		exited, err := r.startProcess(in)
		if err != nil {
			r.say("instance %d could not start: %v", in.slot, err)
		} else {
			<-exited
		}
		r.mu.Lock()
		stopping, planned, code := r.stopping, in.planned, 0
		in.planned = false
		if in.cmd != nil && in.cmd.ProcessState != nil {
			code = in.cmd.ProcessState.ExitCode()
		}
		r.mu.Unlock()
		if stopping {
			return
		}
		if planned { // a rolling restart stopped it and waits for the next one
			backoff = backoffMin
			continue
		}
		if time.Since(started) >= backoffReset {
			backoff = backoffMin
		}
		restart := r.cfg.Restart == Always || r.cfg.Restart == OnFailure && (err != nil || code != 0)
		if !restart {
			r.say("instance %d stays down (--restart %s); a rolling restart starts it", in.slot, r.cfg.Restart)
			select {
			case <-in.revive:
				continue
			case <-r.ctx.Done():
				return
			}
		}
		r.say("instance %d restarts in %v", in.slot, backoff)
		select {
		case <-time.After(backoff):
		case <-in.revive:
		case <-r.ctx.Done():
			return
		}
		backoff = min(2*backoff, backoffMax)
		r.mu.Lock()
		in.restarts++
		r.mu.Unlock()
	}
}

// startProcess starts a process in the slot, in a process group of its own, with its output
// piped to the console. The returned channel is closed once it has exited and been waited for.
func (r *Runner) startProcess(in *instance) (<-chan struct{}, error) {
	rd, wr, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(r.cfg.Command[0], r.cfg.Command[1:]...)
	cmd.Dir = r.cfg.Dir
	cmd.Env = append(append(os.Environ(), r.cfg.Env...), in.env...)
	cmd.Stdout, cmd.Stderr = wr, wr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}

	r.mu.Lock()
	if r.stopping {
		r.mu.Unlock()
		rd.Close()
		wr.Close()
		return nil, errors.New("stopping")
	}
	err = cmd.Start()
	wr.Close() // the children hold their copies; the pipe ends when the last one exits
	if err != nil {
		r.mu.Unlock()
		rd.Close()
		return nil, err
	}
	exited := make(chan struct{})
	in.cmd, in.pid, in.exited = cmd, cmd.Process.Pid, exited
	in.gen++
	in.healthy, in.everUp, in.paused, in.fails = false, false, false, 0
	gen := in.gen
	r.mu.Unlock()

	r.say("instance %d started: pid %d, port %d", in.slot, cmd.Process.Pid, in.port)
	in.logsMu.Lock()
	in.logs = append(in.logs, rd)
	in.logsMu.Unlock()
	in.logsWG.Go(func() { r.copyLines(in, rd) })
	go func() {
		err := cmd.Wait()
		r.transport.CloseIdleConnections() // none kept to a port a new process will take
		r.mu.Lock()
		in.pid, in.healthy = 0, false
		planned, stopping := in.planned, r.stopping
		r.mu.Unlock()
		if !planned && !stopping {
			r.say("instance %d (pid %d, run %d) exited: %v", in.slot, cmd.Process.Pid, gen, exitText(err))
		}
		close(exited)
	}()
	return exited, nil
}

func exitText(err error) string {
	if err == nil {
		return "status 0"
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by " + unix.SignalName(ws.Signal())
		}
	}
	return err.Error()
}

// stopProcess stops the slot's process: SIGTERM to its group (and SIGCONT, should chaos have
// paused it), then SIGKILL to the group after the grace period, or at once once the process
// itself has gone, for any child it left behind.
func (r *Runner) stopProcess(in *instance) {
	r.mu.Lock()
	pid, exited := in.pid, in.exited
	r.mu.Unlock()
	r.stopPID(in, pid, exited)
}

// stopPID is stopProcess for the process pid of in, which closes exited when it is gone; it
// does nothing when pid is 0.
func (r *Runner) stopPID(in *instance, pid int, exited <-chan struct{}) {
	if pid == 0 {
		return
	}
	syscall.Kill(-pid, syscall.SIGTERM)
	syscall.Kill(-pid, syscall.SIGCONT)
	select {
	case <-exited:
	case <-time.After(r.cfg.Grace):
		r.say("instance %d did not stop within %v of SIGTERM: SIGKILL", in.slot, r.cfg.Grace)
	case <-r.hurry:
		r.say("instance %d: SIGKILL, as asked", in.slot)
	}
	syscall.Kill(-pid, syscall.SIGKILL)
	<-exited
}

// copyLines sends each line of one process's output to the console under its slot's prefix.
func (r *Runner) copyLines(in *instance, rd *os.File) {
	defer func() {
		in.logsMu.Lock()
		for i, f := range in.logs {
			if f == rd {
				in.logs = append(in.logs[:i], in.logs[i+1:]...)
				break
			}
		}
		in.logsMu.Unlock()
		rd.Close()
	}()
	br := bufio.NewReaderSize(rd, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if line[len(line)-1] == '\n' {
				line = line[:len(line)-1]
			}
			r.console.line(in.slot, fmt.Sprintf("%d", in.slot), string(line))
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// closeLogs waits a moment for the output of the slot's processes to end, then closes the
// pipes a process outside the killed groups may still hold open.
func (in *instance) closeLogs() {
	done := make(chan struct{})
	go func() { in.logsWG.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-time.After(time.Second):
	}
	in.logsMu.Lock()
	for _, f := range in.logs {
		f.Close()
	}
	in.logsMu.Unlock()
	<-done
}

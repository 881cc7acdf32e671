// Package safe runs the code users hand to the library (handlers, callbacks, loaders,
// checks) so that a panic in it never ends the process: the panic is recovered, logged with
// its stack, counted, and returned as an error the caller handles like any other failure.
//
// Every place that calls user code on one of the library's own goroutines goes through
// [Call] or [Do]; TestOneRecoverRule keeps it that way.
package safe

import (
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync/atomic"
)

// PanicError is the error a recovered panic becomes.
type PanicError struct {
	// What names the code that panicked, as given to [Call].
	What string
	// Value is what was passed to panic.
	Value any
	// Stack is the panicking goroutine's stack.
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("%s panicked: %v", e.What, e.Value) }

// Unwrap returns the panic value when it is an error, so errors.Is sees through it.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// Call runs fn. A panic in fn is recovered, logged at Error with its stack, added to count
// (if count is not nil) and returned as a [*PanicError]; what names the code for both, as in
// "events: handler of group billing". log may be nil (slog.Default).
func Call(log *slog.Logger, count *atomic.Int64, what string, fn func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = recovered(log, count, what, v)
		}
	}()
	return fn()
}

// Do is [Call] for code that returns nothing; it reports whether fn panicked.
func Do(log *slog.Logger, count *atomic.Int64, what string, fn func()) (panicked bool) {
	err := Call(log, count, what, func() error {
		fn()
		return nil
	})
	return err != nil
}

func recovered(log *slog.Logger, count *atomic.Int64, what string, v any) error {
	e := &PanicError{What: what, Value: v, Stack: debug.Stack()}
	if count != nil {
		count.Add(1)
	}
	if log == nil {
		log = slog.Default()
	}
	log.Error(what+" panicked; recovered", "panic", fmt.Sprint(v), "stack", string(e.Stack))
	return e
}

package httpx

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
)

// Buffer captures a response of up to Limit bytes without sending it, so a middleware can
// store it before the client sees it. A handler that writes more than Limit, flushes or
// hijacks makes it stream instead: OnStream runs (it may add headers), what was held goes
// out, and everything after passes straight through.
type Buffer struct {
	W        http.ResponseWriter
	Limit    int
	OnStream func(h http.Header)

	header    http.Header
	status    int
	body      bytes.Buffer
	streaming bool
}

// NewBuffer returns a buffer in front of w.
func NewBuffer(w http.ResponseWriter, limit int) *Buffer {
	return &Buffer{W: w, Limit: limit, header: http.Header{}}
}

// Header implements http.ResponseWriter.
func (b *Buffer) Header() http.Header {
	if b.streaming {
		return b.W.Header()
	}
	return b.header
}

// WriteHeader implements http.ResponseWriter.
func (b *Buffer) WriteHeader(code int) {
	if b.streaming {
		b.W.WriteHeader(code)
		return
	}
	if b.status == 0 && code >= 200 {
		b.status = code
	}
}

// Write implements http.ResponseWriter.
func (b *Buffer) Write(p []byte) (int, error) {
	if !b.streaming && b.body.Len()+len(p) > b.Limit {
		b.stream()
	}
	if b.streaming {
		return b.W.Write(p)
	}
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.body.Write(p)
}

// Flush implements http.Flusher: the response streams from here on.
func (b *Buffer) Flush() {
	b.stream()
	_ = http.NewResponseController(b.W).Flush()
}

// Hijack implements http.Hijacker: the response streams from here on.
func (b *Buffer) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	b.stream()
	return http.NewResponseController(b.W).Hijack()
}

// Unwrap lets http.ResponseController reach the underlying writer (for deadlines).
func (b *Buffer) Unwrap() http.ResponseWriter { return b.W }

func (b *Buffer) stream() {
	if b.streaming {
		return
	}
	b.streaming = true
	if b.OnStream != nil {
		b.OnStream(b.header)
	}
	b.copyHeader()
	if b.status != 0 {
		b.W.WriteHeader(b.status)
	}
	if b.body.Len() > 0 {
		_, _ = b.W.Write(b.body.Bytes())
	}
	b.body = bytes.Buffer{}
}

func (b *Buffer) copyHeader() {
	dst := b.W.Header()
	for k, v := range b.header {
		dst[k] = v
	}
}

// Streamed reports whether the response went out unbuffered: it was too large, flushed or
// hijacked, and is not held whole.
func (b *Buffer) Streamed() bool { return b.streaming }

// Status is the captured status code (200 if the handler wrote nothing).
func (b *Buffer) Status() int {
	if b.status == 0 {
		return http.StatusOK
	}
	return b.status
}

// Captured returns the held headers and body. Only meaningful when not streamed.
func (b *Buffer) Captured() (http.Header, []byte) { return maps.Clone(b.header), b.body.Bytes() }

// Send writes the held response to the client. It does nothing once streamed.
func (b *Buffer) Send() {
	if b.streaming {
		return
	}
	b.copyHeader()
	b.W.WriteHeader(b.Status())
	if b.body.Len() > 0 {
		_, _ = b.W.Write(b.body.Bytes())
	}
}

// Recorder captures a whole response, never sending anything: for handlers whose response
// may only go out after their transaction commits. It holds up to Limit bytes of body in
// memory; a larger body moves to a temporary file, so a large response costs disk, not
// memory. Close removes the file. Flush does nothing.
type Recorder struct {
	header http.Header
	status int
	limit  int
	body   bytes.Buffer
	file   *os.File // the body, once it outgrew limit
	err    error    // the first failure to keep the body
}

// NewRecorder returns an empty recorder keeping up to limit bytes of body in memory.
func NewRecorder(limit int) *Recorder { return &Recorder{header: http.Header{}, limit: limit} }

// Header implements http.ResponseWriter.
func (r *Recorder) Header() http.Header { return r.header }

// WriteHeader implements http.ResponseWriter.
func (r *Recorder) WriteHeader(code int) {
	if r.status == 0 && code >= 200 {
		r.status = code
	}
}

// Write implements http.ResponseWriter.
func (r *Recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	if r.err != nil {
		return 0, r.err
	}
	if r.file == nil && r.body.Len()+len(p) <= r.limit {
		return r.body.Write(p)
	}
	if r.file == nil {
		f, err := os.CreateTemp("", "twice-response-*")
		if err != nil {
			r.err = fmt.Errorf("httpx: keep a response over %d bytes: %w", r.limit, err)
			return 0, r.err
		}
		r.file = f
		if _, err := f.Write(r.body.Bytes()); err != nil {
			r.err = fmt.Errorf("httpx: keep a response over %d bytes: %w", r.limit, err)
			return 0, r.err
		}
		r.body = bytes.Buffer{}
	}
	n, err := r.file.Write(p)
	if err != nil {
		r.err = fmt.Errorf("httpx: keep a response over %d bytes: %w", r.limit, err)
	}
	return n, r.err
}

// Flush implements http.Flusher and does nothing: the response waits for the commit.
func (r *Recorder) Flush() {}

// Err is the first failure to keep the body (a full disk); the response is then incomplete.
func (r *Recorder) Err() error { return r.err }

// Spilled reports whether the body outgrew the limit and is held in a file, not in memory.
func (r *Recorder) Spilled() bool { return r.file != nil }

// Result returns the status (200 if none was written), headers and body; the body is nil
// once spilled.
func (r *Recorder) Result() (int, http.Header, []byte) {
	status := r.status
	if status == 0 {
		status = http.StatusOK
	}
	if r.file != nil {
		return status, r.header, nil
	}
	return status, r.header, r.body.Bytes()
}

// WriteBody writes the whole body to w, from memory or from the file.
func (r *Recorder) WriteBody(w io.Writer) error {
	if r.file == nil {
		_, err := w.Write(r.body.Bytes())
		return err
	}
	if _, err := r.file.Seek(0, io.SeekStart); err != nil {
		return err
	}
	_, err := io.Copy(w, r.file)
	return err
}

// Close removes the file holding a spilled body.
func (r *Recorder) Close() error {
	if r.file == nil {
		return nil
	}
	f := r.file
	r.file = nil
	return errors.Join(f.Close(), os.Remove(f.Name()))
}

package httpx

import (
	"bufio"
	"bytes"
	"maps"
	"net"
	"net/http"
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
// may only go out after their transaction commits. Flush does nothing.
type Recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder { return &Recorder{header: http.Header{}} }

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
	return r.body.Write(p)
}

// Flush implements http.Flusher and does nothing: the response waits for the commit.
func (r *Recorder) Flush() {}

// Result returns the status (200 if none was written), headers and body.
func (r *Recorder) Result() (int, http.Header, []byte) {
	if r.status == 0 {
		return http.StatusOK, r.header, r.body.Bytes()
	}
	return r.status, r.header, r.body.Bytes()
}

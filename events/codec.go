package events

import (
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// validHeaders checks an event's headers against the limits.
func validHeaders(h map[string]string) error {
	if len(h) > MaxHeaders {
		return fmt.Errorf("%w: %d headers; the limit is %d", ErrInvalid, len(h), MaxHeaders)
	}
	size := 0
	for k, v := range h {
		if k == "" {
			return fmt.Errorf("%w: empty header name", ErrInvalid)
		}
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return fmt.Errorf("%w: header %q is not UTF-8", ErrInvalid, k)
		}
		size += len(k) + len(v)
	}
	if size > MaxHeaderBytes {
		return fmt.Errorf("%w: headers of %d bytes; the limit is %d", ErrInvalid, size, MaxHeaderBytes)
	}
	return nil
}

// encodeHeaders stores headers as a JSON object, or NULL when there are none.
func encodeHeaders(h map[string]string) []byte {
	if len(h) == 0 {
		return nil
	}
	b, _ := json.Marshal(h) // a map of valid UTF-8 strings always encodes
	return b
}

// decodeHeaders reads headers as stored by encodeHeaders. The column may have been written
// by another version or by hand, so anything that is not an object of strings within the
// limits is an error rather than a surprise for the handler.
func decodeHeaders(b []byte) (map[string]string, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if len(b) > 2*MaxHeaderBytes+4*MaxHeaders+2 {
		return nil, fmt.Errorf("events: stored headers of %d bytes exceed the limits", len(b))
	}
	var h map[string]string
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("events: stored headers are not a JSON object of strings: %w", err)
	}
	if err := validHeaders(h); err != nil {
		return nil, fmt.Errorf("events: stored headers: %w", err)
	}
	return h, nil
}

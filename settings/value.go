package settings

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Type is the type of a setting's value. A setting keeps its type for life: a Set of
// another type is refused with [ErrType] (delete the setting first to change it).
type Type string

// The types a setting can have, and the Go values that carry them.
const (
	TypeString   Type = "string"   // string
	TypeInt      Type = "int"      // int64
	TypeFloat    Type = "float"    // float64, finite
	TypeBool     Type = "bool"     // bool
	TypeDuration Type = "duration" // time.Duration, written like "1m30s"
	TypeJSON     Type = "json"     // json.RawMessage, compact
)

// Types lists every [Type].
func Types() []Type {
	return []Type{TypeString, TypeInt, TypeFloat, TypeBool, TypeDuration, TypeJSON}
}

// ParseType checks a type's name.
func ParseType(s string) (Type, error) {
	for _, t := range Types() {
		if string(t) == s {
			return t, nil
		}
	}
	return "", fmt.Errorf("%w: unknown type %q (string, int, float, bool, duration or json)", ErrBadValue, s)
}

// Parse reads a value of type t written as text, as an operator types it on the command
// line, and returns the Go value (see [Type]). Integers are decimal; booleans are true or
// false (also 1, 0, t, f in any case); durations as Go writes them ("250ms", "1h30m");
// JSON any valid JSON document.
func Parse(t Type, text string) (any, error) {
	if len(text) > MaxValue {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, len(text), MaxValue)
	}
	var v any
	var err error
	switch t {
	case TypeString:
		v, err = text, checkText(text)
	case TypeInt:
		v, err = strconv.ParseInt(text, 10, 64)
	case TypeFloat:
		var f float64
		if f, err = strconv.ParseFloat(text, 64); err == nil && (math.IsNaN(f) || math.IsInf(f, 0)) {
			err = fmt.Errorf("%v is not a finite number", f)
		}
		v = f
	case TypeBool:
		v, err = strconv.ParseBool(text)
	case TypeDuration:
		v, err = time.ParseDuration(text)
	case TypeJSON:
		var buf bytes.Buffer
		if err = json.Compact(&buf, []byte(text)); err == nil {
			v, err = json.RawMessage(buf.Bytes()), checkText(buf.String())
		}
	default:
		_, err = ParseType(string(t))
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %q is not a valid %s: %v", ErrBadValue, text, t, unwrapNum(err))
	}
	return v, nil
}

// unwrapNum drops strconv's repetition of the input from its errors.
func unwrapNum(err error) error {
	if ne, ok := err.(*strconv.NumError); ok {
		return ne.Err
	}
	return err
}

// checkText refuses what a PostgreSQL text column cannot hold.
func checkText(s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("not valid UTF-8")
	}
	if strings.IndexByte(s, 0) >= 0 {
		return fmt.Errorf("contains a NUL byte")
	}
	return nil
}

// encode returns the type and canonical text of a Go value given to Set.
func encode(v any) (Type, string, error) {
	var t Type
	var text string
	switch x := v.(type) {
	case nil:
		return "", "", fmt.Errorf("%w: nil", ErrBadValue)
	case string:
		if err := checkText(x); err != nil {
			return "", "", fmt.Errorf("%w: string %v", ErrBadValue, err)
		}
		t, text = TypeString, x
	case time.Duration: // before the integers: it is an int64
		t, text = TypeDuration, x.String()
	case int, int8, int16, int32, int64, uint8, uint16, uint32:
		t, text = TypeInt, fmt.Sprint(x)
	case uint:
		if uint64(x) > math.MaxInt64 {
			return "", "", fmt.Errorf("%w: %d does not fit an int64", ErrBadValue, x)
		}
		t, text = TypeInt, fmt.Sprint(x)
	case uint64:
		if x > math.MaxInt64 {
			return "", "", fmt.Errorf("%w: %d does not fit an int64", ErrBadValue, x)
		}
		t, text = TypeInt, fmt.Sprint(x)
	case float32:
		return encode(float64(x))
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return "", "", fmt.Errorf("%w: %v is not a finite number", ErrBadValue, x)
		}
		t, text = TypeFloat, strconv.FormatFloat(x, 'g', -1, 64)
	case bool:
		t, text = TypeBool, strconv.FormatBool(x)
	case json.RawMessage:
		var buf bytes.Buffer
		if err := json.Compact(&buf, x); err != nil {
			return "", "", fmt.Errorf("%w: %v", ErrBadValue, err)
		}
		t, text = TypeJSON, buf.String()
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return "", "", fmt.Errorf("%w: a %T cannot be stored as JSON: %v", ErrBadValue, v, err)
		}
		t, text = TypeJSON, string(b)
	}
	if len(text) > MaxValue {
		return "", "", fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, len(text), MaxValue)
	}
	if t == TypeJSON {
		if err := checkText(text); err != nil {
			return "", "", fmt.Errorf("%w: JSON %v", ErrBadValue, err)
		}
	}
	return t, text, nil
}

// decode reads a stored value. Rows may have been written by another version of twice or
// by hand, so it parses strictly and reports what it could not read.
func decode(t Type, text string) (any, error) {
	if _, err := ParseType(string(t)); err != nil {
		return nil, err
	}
	return Parse(t, text)
}

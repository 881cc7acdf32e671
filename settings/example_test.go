package settings_test

import (
	"fmt"

	"github.com/twicehq/twice/settings"
)

// Parse reads a value as an operator types it, for its type; `twice config set` uses it.
func ExampleParse() {
	for _, in := range []struct {
		t    settings.Type
		text string
	}{
		{settings.TypeDuration, "1m30s"},
		{settings.TypeJSON, `{ "max": 3 }`},
		{settings.TypeInt, "10MB"},
	} {
		v, err := settings.Parse(in.t, in.text)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Printf("%s %q → %T %s\n", in.t, in.text, v, v)
	}
	// Output:
	// duration "1m30s" → time.Duration 1m30s
	// json "{ \"max\": 3 }" → json.RawMessage {"max":3}
	// settings: bad value: "10MB" is not a valid int: invalid syntax
}

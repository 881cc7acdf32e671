package cron_test

import (
	"fmt"
	"time"

	"github.com/twicehq/twice/cron"
)

// Parse reads standard expressions, an optional seconds field, descriptors and time zones;
// node.Cron().Add uses it and names the schedule in its error.
func ExampleParse() {
	at := time.Date(2026, 3, 28, 12, 0, 0, 0, time.UTC)
	for _, expr := range []string{"0 3 * * *", "*/15 * * * * *", "@every 90s", "CRON_TZ=Europe/Berlin 0 3 * * *"} {
		sc, tz, err := cron.Parse(expr, nil)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Printf("%-33s %-13s next %s\n", expr, tz, sc.Next(at).UTC().Format(time.DateTime))
	}
	_, _, err := cron.Parse("61 * * * *", nil)
	fmt.Println(err != nil)
	// Output:
	// 0 3 * * *                         UTC           next 2026-03-29 03:00:00
	// */15 * * * * *                    UTC           next 2026-03-28 12:00:15
	// @every 90s                        UTC           next 2026-03-28 12:01:30
	// CRON_TZ=Europe/Berlin 0 3 * * *   Europe/Berlin next 2026-03-29 01:00:00
	// true
}

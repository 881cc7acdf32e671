//go:build race

package instance_test

// raceEnabled is set in race builds, whose child processes would run an order of magnitude
// slower than production code.
const raceEnabled = true

//go:build !race

package retention_test

// raceEnabled reports a -race build, where the latency test uses fewer
// events.
const raceEnabled = false

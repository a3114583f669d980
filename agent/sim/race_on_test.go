//go:build race

package sim

// The race detector slows the simulation about tenfold; run fewer
// schedules by default under it.
const raceEnabled = true

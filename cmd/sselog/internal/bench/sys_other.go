//go:build !unix

package bench

import "time"

// selfCPU is unknown here: reported as zero.
func selfCPU() time.Duration { return 0 }

// raiseFileLimit has no limit to raise here.
func raiseFileLimit(need int) error { return nil }

//go:build !unix

package procpace

import "time"

// processCPU cannot read the process's CPU time here: no Pacer is made.
func processCPU() (time.Duration, bool) { return 0, false }

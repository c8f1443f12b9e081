package app

import (
	"fmt"
	"strconv"

	"github.com/aodhq/aod/sprites/runner"
)

// localLimits reads the local backend's per-sandbox resource limits:
// AOD_LOCAL_LIMITS (on|off), AOD_LOCAL_MEMORY, AOD_LOCAL_SWAP,
// AOD_LOCAL_PIDS, AOD_LOCAL_CPU (cores; 0 = no quota), AOD_LOCAL_DISK and
// AOD_LOCAL_NOFILE. Unset variables take runner's defaults.
func (p *parser) localLimits() runner.Limits {
	var l runner.Limits
	l.Off = p.oneOf("AOD_LOCAL_LIMITS", "on", "on", "off") == "off"
	l.Memory = p.size("AOD_LOCAL_MEMORY", runner.DefaultMemory, 16<<20)
	l.Swap = p.size("AOD_LOCAL_SWAP", 0, 0)
	l.Pids = int64(p.intRange("AOD_LOCAL_PIDS", runner.DefaultPids, 8, 1<<22))
	l.Disk = p.size("AOD_LOCAL_DISK", runner.DefaultDisk, 16<<20)
	l.NoFile = uint64(p.intRange("AOD_LOCAL_NOFILE", runner.DefaultNoFile, 64, 1<<20))
	l.CPU = runner.DefaultCPU
	if v := p.str("AOD_LOCAL_CPU", ""); v != "" {
		cores, err := strconv.ParseFloat(v, 64)
		switch {
		case err != nil || cores < 0 || cores > 4096:
			p.fail("AOD_LOCAL_CPU", fmt.Sprintf("%q is not a number of cores (0 = no quota)", v))
		case cores == 0:
			l.CPU = -1 // no quota
		case cores < 0.01:
			p.fail("AOD_LOCAL_CPU", "must be at least 0.01 cores (or 0 for no quota)")
		default:
			l.CPU = cores
		}
	}
	return l
}

// size parses a byte size ("2GiB", "512M", bytes) of at least lo.
func (p *parser) size(name string, def, lo int64) int64 {
	v := p.str(name, "")
	if v == "" {
		return def
	}
	n, err := runner.ParseBytes(v)
	if err != nil {
		p.fail(name, err.Error())
		return def
	}
	if n < lo {
		p.fail(name, fmt.Sprintf("%s is below the minimum %s", runner.FormatBytes(n), runner.FormatBytes(lo)))
		return def
	}
	return n
}

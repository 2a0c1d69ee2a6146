//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of utime and stime in /proc/<pid>/stat. The kernel
// exports them in USER_HZ, which is 100 on every Linux architecture Go
// supports, whatever CONFIG_HZ is (`getconf CLK_TCK` prints it).
const userHZ = 100

// rssKiB reads VmRSS from /proc/<pid>/status.
func rssKiB(pid int) (int64, error) { return statusKiB(pid, "VmRSS:") }

// statusKiB reads one field of /proc/<pid>/status, such as "VmHWM:".
func statusKiB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return kibField(b, field)
}

// cpuTime reads utime+stime of pid from /proc/<pid>/stat.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name is in parentheses and may hold spaces; fields resume
	// after the last ')'. utime and stime are fields 14 and 15 of the line.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	return time.Duration(ut+st) * time.Second / userHZ, nil
}

// cpuTimes sums cpuTime over pids; a process that is gone counts zero.
func cpuTimes(pids []int) time.Duration {
	var sum time.Duration
	for _, p := range pids {
		d, _ := cpuTime(p)
		sum += d
	}
	return sum
}

// meminfoKiB reads one field of /proc/meminfo, such as "Slab:".
func meminfoKiB(field string) int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	v, _ := kibField(b, field)
	return v
}

func kibField(b []byte, field string) (int64, error) {
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no %s", field)
}

// machine describes where a run happened.
type machine struct {
	Date      string `json:"date"`
	NProc     int    `json:"nproc"`
	CPU       string `json:"cpu"`
	Kernel    string `json:"kernel"`
	MemTotal  string `json:"mem_total"`
	NoFile    string `json:"nofile_limit"`
	LoadgenGo string `json:"loadgen_go"`
}

func describeMachine() machine {
	m := machine{Date: time.Now().Format(time.RFC3339), NProc: runtime.NumCPU(), LoadgenGo: runtime.Version()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				m.CPU = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	m.MemTotal = fmt.Sprintf("%d MiB", meminfoKiB("MemTotal:")/1024)
	if b, err := os.ReadFile("/proc/self/limits"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "Max open files") {
				m.NoFile = strings.Join(strings.Fields(line)[3:5], "/")
			}
		}
	}
	return m
}

// machineBusy is the CPU time every CPU has spent on anything but idle and
// iowait since boot (the first line of /proc/stat; steal is left out).
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var ticks int64
	// cpu user nice system idle iowait irq softirq steal ...
	for _, i := range []int{1, 2, 3, 6, 7} {
		if i < len(f) {
			v, _ := strconv.ParseInt(f[i], 10, 64)
			ticks += v
		}
	}
	return time.Duration(ticks) * time.Second / userHZ
}

// cpuMeter tells how much CPU the rest of the machine used while we
// measured: the machine's busy time less that of our own processes. The
// build machines are shared, and a fuzzer next door skews every figure.
type cpuMeter struct {
	pids        []int
	t0          time.Time
	busy0, our0 time.Duration
}

func newCPUMeter(pids []int) *cpuMeter {
	pids = append(slices.Clone(pids), os.Getpid())
	return &cpuMeter{pids: pids, t0: time.Now(), busy0: machineBusy(), our0: cpuTimes(pids)}
}

// otherCores is the rest of the machine's average load since newCPUMeter,
// in cores.
func (m *cpuMeter) otherCores() float64 {
	wall := time.Since(m.t0).Seconds()
	if wall <= 0 {
		return 0
	}
	other := (machineBusy() - m.busy0) - (cpuTimes(m.pids) - m.our0)
	return math.Max(0, other.Seconds()/wall)
}

// waitQuiet waits until the rest of the machine has used less than limit
// cores for window, sampling each second, or until maxWait has passed. It
// returns the last sample and whether the machine was quiet.
func waitQuiet(ctx context.Context, pids []int, limit float64, window, maxWait time.Duration) (float64, bool) {
	deadline := time.Now().Add(maxWait)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	quietSince := time.Now()
	m := newCPUMeter(pids)
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return 0, false
		}
		o := m.otherCores()
		m = newCPUMeter(pids)
		if o > limit {
			quietSince = time.Now()
		}
		if time.Since(quietSince) >= window {
			return o, true
		}
		if time.Now().After(deadline) {
			return o, false
		}
	}
}

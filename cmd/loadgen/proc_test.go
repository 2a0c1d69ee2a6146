//go:build linux

package main

import "testing"

func TestKibField(t *testing.T) {
	const status = "Name:\tsidecar\nVmPeak:\t  20480 kB\nVmRSS:\t   1234 kB\nVmHWM:\t5 kB\nVmSwap:\n"
	const meminfo = "MemTotal:        4028748 kB\nSReclaimable:      51200 kB\nSlab:              99999 kB\n"
	for _, tc := range []struct {
		in, field string
		want      int64
		wantErr   bool
	}{
		{status, "VmRSS:", 1234, false},
		{status, "VmHWM:", 5, false},
		{status, "VmPeak:", 20480, false},
		{status, "VmData:", 0, true},     // absent
		{status, "VmSwap:", 0, true},     // present, no number
		{meminfo, "Slab:", 99999, false}, // not SReclaimable's line
		{meminfo, "MemTotal:", 4028748, false},
		{"VmRSS:\tabc kB\n", "VmRSS:", 0, true},
		{"", "VmRSS:", 0, true},
	} {
		got, err := kibField([]byte(tc.in), tc.field)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("kibField(%q, %q) = %d, %v; want %d, error %v", tc.in, tc.field, got, err, tc.want, tc.wantErr)
		}
	}
}

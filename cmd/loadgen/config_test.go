//go:build linux

package main

import (
	"slices"
	"strings"
	"testing"
)

func TestParseSrc(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{"127.0.0.2-127.0.0.4", []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"}, false},
		{"127.0.0.5-127.0.0.5", []string{"127.0.0.5"}, false},
		{"10.1.2.254-10.1.2.255", []string{"10.1.2.254", "10.1.2.255"}, false},
		{"127.0.0.1", []string{"127.0.0.1"}, false},
		{"127.0.0.1, 127.0.0.9 ,10.0.0.1", []string{"127.0.0.1", "127.0.0.9", "10.0.0.1"}, false},
		{"::1", []string{"::1"}, false}, // a list may hold IPv6, a range may not
		{"127.0.0.4-127.0.0.2", nil, true},
		{"127.0.0.2-127.0.1.4", nil, true},
		{"10.0.0.1-11.0.0.1", nil, true},
		{"::1-::2", nil, true},
		{"127.0.0.2-", nil, true},
		{"127.0.0.1 - 127.0.0.3", nil, true}, // a range is not trimmed
		{"", nil, true},
		{"127.0.0.1,,127.0.0.2", nil, true},
		{"127.0.0.1,localhost", nil, true},
	} {
		ips, err := parseSrc(tc.in)
		var got []string
		for _, ip := range ips {
			got = append(got, ip.String())
		}
		if (err != nil) != tc.wantErr || !slices.Equal(got, tc.want) {
			t.Errorf("parseSrc(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestTargetValidate(t *testing.T) {
	valid := func() target {
		return target{URL: "ws://127.0.0.1:8080/ws", Secret: "s", Src: "127.0.0.2-127.0.0.3",
			PerProc: 9000, ConnectRate: 1, DialWorkers: 1}
	}
	for _, tc := range []struct {
		name    string
		edit    func(*target)
		api     string // t.API afterwards
		wantErr string // a substring; "" for no error
	}{
		{"defaults", func(*target) {}, "http://127.0.0.1:8080", ""},
		{"api kept", func(t *target) { t.API = "http://other:9" }, "http://other:9", ""},
		{"static token only", func(t *target) { t.Secret, t.Token = "", "tok" }, "http://127.0.0.1:8080", ""},
		{"token command only", func(t *target) { t.Secret, t.TokenCmd = "", "echo tok" }, "http://127.0.0.1:8080", ""},
		{"per-proc at the limit", func(t *target) { t.PerProc = 19000 }, "http://127.0.0.1:8080", ""},
		{"http url", func(t *target) { t.URL = "http://127.0.0.1:8080/ws" }, "", "--url"},
		{"bad url", func(t *target) { t.URL = "ws://[::1" }, "", "--url"},
		{"no tokens", func(t *target) { t.Secret = "" }, "http://127.0.0.1:8080", "no way to get tokens"},
		{"bad src", func(t *target) { t.Src = "127.0.0.9-127.0.0.1" }, "http://127.0.0.1:8080", "--src"},
		{"per-proc 0", func(t *target) { t.PerProc = 0 }, "http://127.0.0.1:8080", "--per-proc"},
		{"per-proc over", func(t *target) { t.PerProc = 19001 }, "http://127.0.0.1:8080", "--per-proc"},
		{"connect-rate 0", func(t *target) { t.ConnectRate = 0 }, "http://127.0.0.1:8080", "--connect-rate"},
		{"dial-workers 0", func(t *target) { t.DialWorkers = 0 }, "http://127.0.0.1:8080", "--dial-workers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg := valid()
			tc.edit(&tg)
			err := tg.validate()
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("validate() = %v, want an error containing %q", err, tc.wantErr)
			}
			if tg.API != tc.api {
				t.Errorf("API = %q, want %q", tg.API, tc.api)
			}
		})
	}
}

func TestFirstKey(t *testing.T) {
	for in, want := range map[string]string{"": "", "a": "a", " a , b": "a", ",b": "", "k1,k2,k3": "k1"} {
		if got := firstKey(in); got != want {
			t.Errorf("firstKey(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFirstEnv(t *testing.T) {
	t.Setenv("LOADGEN_TEST_EMPTY", "")
	t.Setenv("LOADGEN_TEST_SET", "v")
	t.Setenv("LOADGEN_TEST_LATER", "w")
	if got := firstEnv("LOADGEN_TEST_UNSET", "LOADGEN_TEST_EMPTY", "LOADGEN_TEST_SET", "LOADGEN_TEST_LATER"); got != "v" {
		t.Errorf("firstEnv = %q, want %q (the first set and non-empty)", got, "v")
	}
	if got := firstEnv("LOADGEN_TEST_UNSET"); got != "" {
		t.Errorf("firstEnv(unset) = %q, want empty", got)
	}
}

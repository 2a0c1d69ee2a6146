package rules

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
)

func TestID(t *testing.T) {
	type myString string
	for _, tc := range []struct {
		name string
		in   any
		want string
		err  string
	}{
		{"string", "u1", "u1", ""},
		{"int", 42, "42", ""},
		{"int64", int64(-7), "-7", ""},
		{"int8", int8(5), "5", ""},
		{"uint64", uint64(math.MaxUint64), "18446744073709551615", ""},
		{"whole float", 42.0, "42", ""},
		{"fraction", 1.5, "1.5", ""},
		{"big float without exponent", 1e21, "1000000000000000000000", ""},
		{"float32", float32(3), "3", ""},
		{"json.Number", json.Number("12"), "12", ""},
		{"named string", myString("u2"), "u2", ""},
		{"nil", nil, "", "id is nil"},
		{"empty", "", "", "id is empty"},
		{"NaN", math.NaN(), "", "want a string or a finite number"},
		{"Inf", math.Inf(1), "", "want a string or a finite number"},
		{"bool", true, "", "id is a bool, want a string or a number"},
		{"map", map[string]any{}, "", "id is a map"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ID(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("ID(%#v) = %q, %v, want error %q", tc.in, got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("ID(%#v) = %q, %v, want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

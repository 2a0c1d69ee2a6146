//go:build linux

package main

import (
	"slices"
	"testing"
)

func TestParseRates(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []float64
		wantErr bool
	}{
		{"1000,2000,4000", []float64{1000, 2000, 4000}, false},
		{" 1.5 , 2 ,", []float64{1.5, 2}, false},
		{"1,,2", []float64{1, 2}, false},
		{"1e3", []float64{1000}, false},
		{"", nil, true}, // no rates: an error, not an empty sweep
		{"NaN", nil, true},
		{"Inf", nil, true},
		{" , ", nil, true},
		{"0", nil, true},
		{"-1", nil, true},
		{"10/s", nil, true},
		{"1,x", nil, true},
	} {
		got, err := parseRates(tc.in)
		if (err != nil) != tc.wantErr || !slices.Equal(got, tc.want) {
			t.Errorf("parseRates(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestSustainRates(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []float64
		wantErr bool
	}{
		{"", nil, false},   // run --rates= : no sustained phase
		{"  ", nil, false}, // the same
		{"2,5,10", []float64{2, 5, 10}, false},
		{",", nil, true}, // not empty: a list with no rate in it
		{"x", nil, true},
	} {
		got, err := sustainRates(tc.in)
		if (err != nil) != tc.wantErr || !slices.Equal(got, tc.want) {
			t.Errorf("sustainRates(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

//go:build linux

package main

import (
	"slices"
	"testing"
	"time"
)

func TestQuantOf(t *testing.T) {
	oneTo100 := make([]float64, 100)
	for i := range oneTo100 {
		oneTo100[i] = float64(100 - i) // descending: quantOf sorts a copy
	}
	for _, tc := range []struct {
		name string
		in   []float64
		want quant
	}{
		{"empty", nil, quant{}},
		{"one", []float64{5}, quant{5, 5, 5}},
		{"three, unsorted", []float64{3, 1, 2}, quant{P50: 2, P99: 3, Max: 3}},
		{"1..100", oneTo100, quant{P50: 50, P99: 99, Max: 100}},
		{"rounded to 3 decimals", []float64{1.23456, 0.0004}, quant{P50: 0, P99: 1.235, Max: 1.235}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := slices.Clone(tc.in)
			if got := quantOf(in); got != tc.want {
				t.Errorf("quantOf(%v) = %+v, want %+v", tc.in, got, tc.want)
			}
			if !slices.Equal(in, tc.in) {
				t.Errorf("quantOf changed its argument to %v", in)
			}
		})
	}
}

func TestQuantString(t *testing.T) {
	if got, want := (quant{P50: 1.26, P99: 2, Max: 3.04}).String(), "p50 1.3, p99 2.0, max 3.0"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestMsRound3(t *testing.T) {
	if got := ms(1500 * time.Microsecond); got != 1.5 {
		t.Errorf("ms(1.5ms) = %v, want 1.5", got)
	}
	for in, want := range map[float64]float64{1.2344: 1.234, 1.2346: 1.235, -0.0006: -0.001, 7: 7} {
		if got := round3(in); got != want {
			t.Errorf("round3(%v) = %v, want %v", in, got, want)
		}
	}
}

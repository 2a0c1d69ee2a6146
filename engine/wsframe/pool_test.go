package wsframe

import "testing"

func TestGetBuf(t *testing.T) {
	for _, n := range []int{0, 1, 125, 128, 129, 512, 513, 4 << 10, 60000, 64 << 10, 64<<10 + 1, 1 << 20} {
		bp := getBuf(n)
		if len(*bp) != 0 || cap(*bp) < n || cap(*bp) != bufCap(n) {
			t.Errorf(
				"getBuf(%d): len %d cap %d, want len 0 cap %d",
				n, len(*bp), cap(*bp), bufCap(n))
		}
		*bp = append(*bp, "dirty"...)
		putBuf(bp)
	}
	// Whatever came back from a pool was reset by putBuf.
	for range 100 {
		bp := getBuf(128)
		if len(*bp) != 0 {
			t.Fatalf(
				"pooled buffer has len %d, want 0",
				len(*bp))
		}
		*bp = append(*bp, 'x')
		putBuf(bp)
	}
}

func TestGrowCap(t *testing.T) {
	tests := []struct {
		name                 string
		cur, need, end, want int
	}{
		{
			name: "small frame: declared end trusted",
			cur:  0, need: 10, end: 3000, want: 3000,
		},
		{
			name: "large frame: at most maxTier before data arrives",
			cur:  0, need: 10, end: 1 << 30, want: maxTier,
		},
		{
			name: "large frame: doubles what arrived",
			cur:  maxTier, need: maxTier + 1, end: 1 << 30, want: 2 * maxTier,
		},
		{
			name: "never past the frame end",
			cur:  maxTier, need: maxTier + 1, end: maxTier + 100, want: maxTier + 100,
		},
		{
			name: "always room for what arrived",
			cur:  maxTier, need: 5 * maxTier, end: 1 << 30, want: 5 * maxTier,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := growCap(tc.cur, tc.need, tc.end); got != tc.want {
				t.Errorf(
					"growCap(%d, %d, %d) = %d, want %d",
					tc.cur, tc.need, tc.end, got, tc.want)
			}
		})
	}
}

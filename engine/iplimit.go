package engine

import "sync"

// ipLimiter bounds new connections per source address per second
// (limits.connections_per_ip_per_second; 0 turns it off). It keeps one
// small entry per address seen this second and the last, nothing older.
type ipLimiter struct {
	limit int
	mu    sync.Mutex
	sec   int64          // guarded by mu
	cur   map[string]int // guarded by mu: counts in second sec
}

func (l *ipLimiter) init(limit int) { l.limit = limit }

func (l *ipLimiter) allow(ip string, now int64) bool {
	if l.limit <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now != l.sec || l.cur == nil {
		l.sec, l.cur = now, make(map[string]int)
	}
	if l.cur[ip] >= l.limit {
		return false
	}
	l.cur[ip]++
	return true
}

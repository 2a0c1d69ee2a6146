package engine

import (
	"runtime"
	"time"
)

// Limits bound what one node accepts. Zero values take the defaults of
// DefaultLimits, except where a field says what zero means.
type Limits struct {
	MaxConnections     int
	MaxMessageBytes    int
	OutboundQueueBytes int
	WriteTimeout       time.Duration
	// CloseTimeout is how long a closing connection may take to finish
	// the frame it had started and its close frame before the socket is
	// dropped; a slow consumer resuming within it reads a valid stream.
	CloseTimeout     time.Duration
	HandshakeTimeout time.Duration
	PingInterval     time.Duration
	IdleTimeout      time.Duration
	// ClientEventsPerSecond is the token bucket's rate per connection, and
	// ClientEventsBurst its size (0: twice the rate). A rate of 0 turns
	// the limit off.
	ClientEventsPerSecond     int
	ClientEventsBurst         int
	ConnectionsPerIPPerSecond int // 0: unlimited
	// SendBufferBytes is each socket's SO_SNDBUF, which bounds what a slow
	// consumer holds in the kernel; 0 keeps the kernel's own (autotuned,
	// up to megabytes).
	SendBufferBytes int
	Workers         int // read workers; 0: 4 × GOMAXPROCS
	RuleWorkers     int // goroutines running client and close rules; 0: 2 × GOMAXPROCS
	MaxHeaderBytes  int // HTTP request headers; over it: 431
}

// DefaultLimits are the limits of config.example.yaml.
func DefaultLimits() Limits {
	return Limits{
		MaxConnections:        100000,
		MaxMessageBytes:       65536,
		OutboundQueueBytes:    1 << 20,
		WriteTimeout:          5 * time.Second,
		CloseTimeout:          10 * time.Second,
		HandshakeTimeout:      10 * time.Second,
		PingInterval:          25 * time.Second,
		IdleTimeout:           60 * time.Second,
		ClientEventsPerSecond: 50,
		ClientEventsBurst:     100,
		SendBufferBytes:       128 << 10,
		MaxHeaderBytes:        16 << 10,
	}
}

func (l *Limits) setDefaults() {
	d := DefaultLimits()
	def := func(v *int, dv int) {
		if *v <= 0 {
			*v = dv
		}
	}
	defd := func(v *time.Duration, dv time.Duration) {
		if *v <= 0 {
			*v = dv
		}
	}
	def(&l.MaxConnections, d.MaxConnections)
	def(&l.MaxMessageBytes, d.MaxMessageBytes)
	def(&l.OutboundQueueBytes, d.OutboundQueueBytes)
	def(&l.MaxHeaderBytes, d.MaxHeaderBytes)
	def(&l.Workers, 4*runtime.GOMAXPROCS(0))
	def(&l.RuleWorkers, 2*runtime.GOMAXPROCS(0))
	defd(&l.WriteTimeout, d.WriteTimeout)
	defd(&l.CloseTimeout, d.CloseTimeout)
	defd(&l.HandshakeTimeout, d.HandshakeTimeout)
	defd(&l.PingInterval, d.PingInterval)
	defd(&l.IdleTimeout, d.IdleTimeout)
	if l.ClientEventsPerSecond > 0 && l.ClientEventsBurst <= 0 {
		l.ClientEventsBurst = 2 * l.ClientEventsPerSecond
	}
	if l.ClientEventsBurst < l.ClientEventsPerSecond {
		l.ClientEventsBurst = l.ClientEventsPerSecond
	}
}

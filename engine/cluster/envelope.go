package cluster

import (
	"encoding/binary"
	"errors"
	"time"

	"github.com/sidecar/sidecar/engine"
)

// An envelope is what one node publishes to the others: a message for
// their hubs, or a room change for a user's connections. It is encoded once
// per publish, whatever the number of channels it goes to, in a compact
// binary form (no JSON: the data is JSON already and is carried as is):
//
//	kind      1 byte: 'M' message, 'R' rooms
//	origin    string: the publishing node's id (no echo: a node drops its own)
//	sent      8 bytes, big endian: unix nanoseconds, for the latency metric
//	'M':      id, event, data (strings), flags (1 byte: 1 to everyone, 2 the
//	          id is the cluster's), users, rooms, except (lists)
//	'R':      user (string), leave (1 byte), rooms (list)
//
// A string is a uvarint length and its bytes; a list, a uvarint count and
// its strings.
type envelope struct {
	kind   byte
	origin string
	sent   time.Time
	msg    engine.Message // 'M'
	user   string         // 'R'
	leave  bool           // 'R'
	rooms  []string       // 'R'
}

const (
	kindMessage = 'M'
	kindRooms   = 'R'

	flagAll     = 1 // to everyone
	flagStamped = 2 // its id is the cluster's (engine.Message.Stamped)
)

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendList(b []byte, l []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(l)))
	for _, s := range l {
		b = appendString(b, s)
	}
	return b
}

func appendHead(b []byte, kind byte, origin string, sent time.Time) []byte {
	b = append(b, kind)
	b = appendString(b, origin)
	return binary.BigEndian.AppendUint64(b, uint64(sent.UnixNano()))
}

// encodeMessage is m's envelope.
func encodeMessage(origin string, sent time.Time, m *engine.Message) []byte {
	n := 32 + len(origin) + len(m.ID) + len(m.Event) + len(m.Data)
	for _, l := range [][]string{m.To.Users, m.To.Rooms, m.To.Except} {
		for _, s := range l {
			n += len(s) + 2
		}
	}
	b := appendHead(make([]byte, 0, n), kindMessage, origin, sent)
	b = appendString(b, m.ID)
	b = appendString(b, m.Event)
	b = appendString(b, string(m.Data))
	var flags byte
	if m.To.All {
		flags |= flagAll
	}
	if m.Stamped {
		flags |= flagStamped
	}
	b = append(b, flags)
	b = appendList(b, m.To.Users)
	b = appendList(b, m.To.Rooms)
	return appendList(b, m.To.Except)
}

// encodeRooms is the envelope of user's connections joining (or leaving) rooms.
func encodeRooms(origin string, sent time.Time, user string, leave bool, rooms []string) []byte {
	b := appendHead(nil, kindRooms, origin, sent)
	b = appendString(b, user)
	l := byte(0)
	if leave {
		l = 1
	}
	b = append(b, l)
	return appendList(b, rooms)
}

var errEnvelope = errors.New("cluster: malformed envelope")

// decoder reads an envelope; the first error sticks.
type decoder struct {
	b   string
	err error
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) < 1 {
		d.err = errEnvelope
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	var x uint64
	var s uint
	for i := 0; i < len(d.b) && i < binary.MaxVarintLen64; i++ {
		c := d.b[i]
		if c < 0x80 {
			if i == binary.MaxVarintLen64-1 && c > 1 || i > 0 && c == 0 {
				break // overflow, or not the shortest form
			}
			d.b = d.b[i+1:]
			return x | uint64(c)<<s
		}
		x |= uint64(c&0x7f) << s
		s += 7
	}
	d.err = errEnvelope
	return 0
}

func (d *decoder) string() string {
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.b)) {
		d.err = errEnvelope
		return ""
	}
	s := d.b[:n]
	d.b = d.b[n:]
	return s
}

func (d *decoder) list() []string {
	n := d.uvarint()
	// Each string takes a byte at least: a count past what is left is a lie.
	if d.err != nil || n > uint64(len(d.b)) {
		d.err = errEnvelope
		return nil
	}
	if n == 0 {
		return nil
	}
	l := make([]string, 0, n)
	for range n {
		l = append(l, d.string())
		if d.err != nil {
			return nil
		}
	}
	return l
}

// decodeEnvelope reads p, which comes from Redis: anything may be in it.
// The strings it returns share p's memory.
func decodeEnvelope(p string) (envelope, error) {
	d := decoder{b: p}
	var e envelope
	e.kind = d.byte()
	e.origin = d.string()
	if d.err == nil && len(d.b) >= 8 {
		e.sent = time.Unix(0, int64(binary.BigEndian.Uint64([]byte(d.b[:8]))))
		d.b = d.b[8:]
	} else {
		d.err = errEnvelope
	}
	switch e.kind {
	case kindMessage:
		e.msg.ID = d.string()
		e.msg.Event = d.string()
		e.msg.Data = []byte(d.string())
		flags := d.byte()
		e.msg.To.All = flags&flagAll != 0
		e.msg.Stamped = flags&flagStamped != 0
		e.msg.To.Users = d.list()
		e.msg.To.Rooms = d.list()
		e.msg.To.Except = d.list()
		e.msg.Remote = true
	case kindRooms:
		e.user = d.string()
		leave := d.byte()
		if leave > 1 {
			d.err = errEnvelope
		}
		e.leave = leave == 1
		e.rooms = d.list()
	default:
		d.err = errEnvelope
	}
	// Unknown flag bits and bytes after the last field are a newer node's
	// additions: ignored, so that a rolling upgrade still delivers.
	if d.err != nil {
		return envelope{}, d.err
	}
	return e, nil
}

package sio

// Emit is an EVENT's payload split into what the client passed to
// socket.emit: the event name, then its arguments, left as raw JSON.
//
// socket.io-client turns a trailing callback into the packet's ack id, so
// socket.emit("typing", {to: "u2"}, ack) arrives as one argument with an id:
// `421["typing",{"to":"u2"}]`. The engine's client events carry one data
// value, and Arg is it. With no argument (socket.emit("typing")) Arg is nil:
// the data is absent. With more than one, Arg is the first and the others are
// ignored, as a JavaScript handler that declares one parameter ignores extra
// ones; NArgs lets the engine be stricter.
type Emit struct {
	// Name is the event name, unescaped. It aliases the payload when the JSON
	// string has no escape and is valid UTF-8, and is a new slice otherwise.
	Name []byte
	// Arg is the raw JSON of the first argument after the name, without
	// surrounding whitespace, aliasing the payload; nil when there is none.
	Arg []byte
	// NArgs is the number of arguments after the name.
	NArgs int
}

// SplitEvent splits the payload of an EVENT (a SIOPacket's Data) into its
// event name and arguments, decoding none of the arguments. It fails unless
// data is a JSON array whose first element is a string.
//
// data must be valid JSON, as ParseSIO guarantees for the Data it returns:
// SplitEvent checks the array's shape, not the JSON inside the arguments.
// Given invalid JSON it returns an error or slices of data, and never panics.
func SplitEvent(data []byte) (Emit, error) {
	name, i, err := eventName(data)
	if err != nil {
		return Emit{}, err
	}
	e := Emit{Name: name}
	for {
		if i == len(data) {
			return Emit{}, errEventPayload
		}
		if data[i] == ']' {
			break
		}
		if data[i] != ',' {
			return Emit{}, errEventPayload
		}
		start := skipSpace(data, i+1)
		end, ok := skipValue(data, start)
		if !ok {
			return Emit{}, errJSON
		}
		if e.NArgs == 0 {
			e.Arg = data[start:end]
		}
		e.NArgs++
		i = skipSpace(data, end)
	}
	if skipSpace(data, i+1) != len(data) {
		return Emit{}, errEventPayload
	}
	return e, nil
}

// eventName reads the start of an EVENT payload, '[' and the event name,
// and returns the unescaped name and the index of the first non-space byte
// after it.
func eventName(data []byte) (name []byte, next int, err error) {
	lit, next, err := eventNameLiteral(data)
	if err != nil {
		return nil, 0, err
	}
	name, ok := unquote(lit)
	if !ok {
		return nil, 0, errEventName
	}
	return name, next, nil
}

// eventNameLiteral reads the start of an EVENT payload, '[' and the event
// name, and returns the name's JSON string literal, quotes included, and the
// index of the first non-space byte after it.
func eventNameLiteral(data []byte) (lit []byte, next int, err error) {
	i := skipSpace(data, 0)
	if i == len(data) || data[i] != '[' {
		return nil, 0, errEventPayload
	}
	i = skipSpace(data, i+1)
	if i == len(data) || data[i] != '"' {
		return nil, 0, errEventName
	}
	end, ok := skipString(data, i)
	if !ok {
		return nil, 0, errEventName
	}
	return data[i:end], skipSpace(data, end), nil
}

// maxReservedLiteral is the longest JSON literal of a reserved event name:
// "removeListener", every character escaped as \uXXXX.
const maxReservedLiteral = 2 + 6*len("removeListener")

// reservedLiteral reports whether the JSON string literal lit is a reserved
// event name, without allocating.
func reservedLiteral(lit []byte) bool {
	if len(lit) > maxReservedLiteral {
		return false
	}
	var buf [3 * maxReservedLiteral]byte // U+FFFD for each byte at most
	name, ok := appendUnquoted(buf[:0], lit)
	return ok && reservedEvent(name)
}

// reservedEvent reports the event names the reference parser refuses,
// because socket.io's own events use them.
func reservedEvent(name []byte) bool {
	switch string(name) {
	case "connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener":
		return true
	}
	return false
}

// skipSpace returns the index of the first byte at or after i that is not
// JSON whitespace.
func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skipString returns the index just past the JSON string starting at b[i]
// (a '"'); ok is false when it does not end.
func skipString(b []byte, i int) (end int, ok bool) {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1, true
		}
	}
	return 0, false
}

// skipValue returns the index just past the JSON value starting at b[i]. On
// valid JSON it is exact; on anything else it stays within b and may report
// ok for a value that is not one.
func skipValue(b []byte, i int) (end int, ok bool) {
	if i == len(b) {
		return 0, false
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '[', '{':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				e, ok := skipString(b, i)
				if !ok {
					return 0, false
				}
				i = e
				continue
			case '[', '{':
				depth++
			case ']', '}':
				depth--
				if depth == 0 {
					return i + 1, true
				}
			}
			i++
		}
		return 0, false
	}
	start := i
	for i < len(b) {
		switch b[i] {
		case ',', ']', '}', ' ', '\t', '\n', '\r':
			return i, i > start
		}
		i++
	}
	return i, i > start
}

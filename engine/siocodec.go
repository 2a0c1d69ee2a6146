package engine

import (
	"errors"
	"strconv"
	"time"

	"github.com/gobwas/ws"

	"github.com/sidecar/sidecar/engine/sio"
	"github.com/sidecar/sidecar/engine/store"
	"github.com/sidecar/sidecar/engine/wsframe"
)

// sioCodec is Socket.IO v5 over Engine.IO v4, on the main namespace "/",
// as socket.io-client v4 speaks it once connected (the CONNECT is handled
// before: socketio.go). Its frames are WebSocket text frames whose payload
// is one Engine.IO packet, so a long-polling transport takes the payloads
// as they are.
//
// Out: an event is `42["name",data,"<stream id>"]`: the id is the
// connection state recovery offset socket.io-client 4.6+ keeps (the
// CONNECT answer always carries a pid, so the client takes a trailing
// string as the offset and hands the listener the data alone). An event
// of the engine's own, with no id, is `42["name",data]`. An ack is
// `43<id>[{"ok":true}]` or `43<id>[{"error":{"code","message"}}]`: the
// emit's callback gets the native protocol's answer as its one argument.
//
// In: an EVENT `42["name",data]` (with an ack id: `421[...]`) is a client
// event with the first argument as its data; the pong `3` is a sign of
// life; `41` and the Engine.IO close `1` end the connection normally;
// a CONNECT to another namespace is answered "Invalid namespace" and
// changes nothing. A malformed packet closes the connection (1002), and so
// does a binary frame or attachment (1003, documented: not supported).
type sioCodec struct{}

var _ codec = sioCodec{}

var (
	sioPing    = textFrame(sio.AppendPing(nil, ""))
	sioClose   = textFrame(sio.AppendClose(nil))
	sioAckOK   = []byte(`{"ok":true}`)
	errSIOJunk = &wsframe.CloseError{Code: ws.StatusProtocolError, Reason: "malformed Socket.IO packet"}
	errSIOBin  = &wsframe.CloseError{Code: ws.StatusUnsupportedData, Reason: "binary data is not supported"}
	errSIOBye  = &wsframe.CloseError{Code: ws.StatusNormalClosure}
)

// textFrame is payload as a complete server text frame.
func textFrame(payload []byte) []byte { return serverFrame(ws.OpText, payload) }

func (sioCodec) encodeEvent(name string, data []byte, id string) []byte {
	f := make([]byte, maxHeader, maxHeader+len(`42["",,""]`)+len(name)+len(data)+len(id)+8)
	f = sio.AppendEvent(f, "/", name, data, id)
	return prependHeader(f, ws.OpText)
}

func (sioCodec) encodeAck(ack int64, code, message string) []byte {
	f := make([]byte, maxHeader, maxHeader+64+len(message))
	arg := sioAckOK
	if code != "" {
		a := make([]byte, 0, 48+len(message))
		a = append(a, `{"error":{"code":`...)
		a = appendJSONString(a, code)
		a = append(a, `,"message":`...)
		a = appendJSONString(a, message)
		arg = append(a, `}}`...)
	}
	f = sio.AppendAck(f, "/", ack, arg)
	return prependHeader(f, ws.OpText)
}

func (sioCodec) decode(op ws.OpCode, p []byte) (clientEvent, []byte, error) {
	none := clientEvent{none: true}
	if op != ws.OpText {
		return none, nil, errSIOBin
	}
	pkt, err := sio.ParsePacket(p)
	if err != nil {
		return none, nil, errSIOJunk
	}
	switch pkt.Type {
	case sio.Pong, sio.Noop:
		return none, nil, nil
	case sio.Ping: // not sent by an Engine.IO v4 client, but answered
		return none, textFrame(sio.AppendPong(nil, string(pkt.Data))), nil
	case sio.Close:
		return none, nil, errSIOBye
	case sio.Message:
	default: // open, upgrade: not from a client, not now
		return none, nil, errSIOJunk
	}
	m, err := sio.ParseSIO(pkt.Data)
	switch {
	case errors.Is(err, sio.ErrBinary):
		return none, nil, errSIOBin
	case err != nil:
		return none, nil, errSIOJunk
	}
	if m.Namespace != "/" {
		if m.Type == sio.Connect {
			return none, sioInvalidNamespace(m.Namespace), nil
		}
		return none, nil, nil // not connected there: ignored, as socket.io does
	}
	switch m.Type {
	case sio.Event:
	case sio.Disconnect:
		return none, nil, errSIOBye
	case sio.Connect, sio.Ack: // connected already; no emit of ours asks for an ack
		return none, nil, nil
	default:
		return none, nil, errSIOJunk
	}
	emit, err := sio.SplitEvent(m.Data)
	if err != nil {
		return none, nil, errSIOJunk
	}
	ev := clientEvent{name: string(emit.Name), size: len(p), ack: m.ID, hasAck: m.HasID}
	if emit.Arg != nil {
		ev.raw = append([]byte(nil), emit.Arg...) // p is the reader's buffer
	}
	return ev, nil, nil
}

func (sioCodec) ping() []byte    { return sioPing }
func (sioCodec) closing() []byte { return sioClose }

// sioInvalidNamespace answers a CONNECT to a namespace other than "/".
func sioInvalidNamespace(nsp string) []byte {
	return textFrame(sio.AppendConnectError(nil, nsp, "Invalid namespace", nil))
}

// sioHello is what the CONNECT of a Socket.IO connection asked, for its
// partition to answer once the conn is indexed (partition.helloSIO).
type sioHello struct {
	sid    string // the Socket.IO socket id
	pid    string // the session id the client asks to recover; "" for none
	since  string // where to replay from: its offset, else its pid
	replay bool
}

// helloSIO answers c's CONNECT, being indexed: with replay, what it
// missed first, then `40{"sid","pid"}` ahead of it. The pid is the one
// the client asked to recover when the replay is complete, so that
// socket.recovered is true; otherwise it is a new one, the newest stream
// position: a client that received no event before its next reconnect
// asks to recover from there.
func (p *partition) helloSIO(c *conn, h *sioHello) {
	var frames [][]byte
	recovered := false
	if h.replay {
		frames, recovered = p.missed(c, h.since)
	}
	pid := h.pid
	if !recovered || pid == "" {
		pid = p.e.position()
	}
	if !p.enqueue(c, textFrame(sio.AppendConnect(nil, "/", h.sid, pid))) {
		return
	}
	for _, f := range frames {
		if !p.enqueue(c, f) {
			return
		}
	}
}

// position is a stream id at least that of every message stamped before,
// and below that of every message stamped after: called by a partition
// as it indexes a conn, it is past every message that reached the
// partition before. Lock-free: a partition must never wait on pubMu.
// The time is raised as a floor, so a clock that goes back cannot give a
// later message an id below it.
//
// With a cluster's streams, it is the newest cluster id the node has seen
// (stamped, or received from another node): past every message that
// reached the partition, in the order the cluster shares.
func (e *Engine) position() string {
	if e.stamper != nil {
		e.stampMu.Lock()
		last := e.lastStamp
		e.stampMu.Unlock()
		if last != (store.StreamID{}) {
			return last.String()
		}
	}
	ms := e.hub.raiseMs(time.Now().UnixMilli())
	seq := e.nextEvent.Load()
	b := make([]byte, 0, 24)
	b = strconv.AppendInt(b, ms, 10)
	b = append(b, '-')
	b = strconv.AppendUint(b, seq, 10)
	return string(b)
}

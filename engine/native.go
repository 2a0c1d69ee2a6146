package engine

import (
	"encoding/json"
	"strconv"

	"github.com/gobwas/ws"

	"github.com/sidecar/sidecar/engine/wsframe"
)

// nativeCodec is the sidecar's own protocol on /ws (the contract's section
// 4): UTF-8 JSON text frames, {"event","data","id"} out and
// {"event","data","ack"} in.
type nativeCodec struct{}

var _ codec = nativeCodec{}

// encodeEvent encodes {"event":name,"data":data,"id":id} in one allocation.
func (nativeCodec) encodeEvent(name string, data []byte, id string) []byte {
	f := make([]byte, maxHeader, maxHeader+len(`{"event":"","data":,"id":""}`)+len(name)+len(data)+len(id)+8)
	f = append(f, `{"event":`...)
	f = appendJSONString(f, name)
	f = append(f, `,"data":`...)
	f = append(f, data...)
	if id != "" { // frames of the engine's own (resumed, presence) have none
		f = append(f, `,"id":`...)
		f = appendJSONString(f, id)
	}
	f = append(f, '}')
	return prependHeader(f, ws.OpText)
}

// encodeAck encodes {"ack":n,"ok":true} or
// {"ack":n,"error":{"code":..,"message":..}}.
func (nativeCodec) encodeAck(ack int64, code, message string) []byte {
	f := make([]byte, maxHeader, maxHeader+64+len(message))
	f = append(f, `{"ack":`...)
	f = strconv.AppendInt(f, ack, 10)
	if code == "" {
		f = append(f, `,"ok":true}`...)
	} else {
		f = append(f, `,"error":{"code":`...)
		f = appendJSONString(f, code)
		f = append(f, `,"message":`...)
		f = appendJSONString(f, message)
		f = append(f, `}}`...)
	}
	return prependHeader(f, ws.OpText)
}

// nativeMessage is a client-to-server message: {"event", "data", "ack"}.
type nativeMessage struct {
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
	Ack   *int64          `json:"ack"`
}

var errInvalidJSON = &wsframe.CloseError{Code: ws.StatusInvalidFramePayloadData, Reason: "invalid JSON"}

// decode parses a text frame. Binary frames and invalid JSON close the
// connection with 1007: the native protocol is JSON text.
func (nativeCodec) decode(op ws.OpCode, p []byte) (clientEvent, []byte, error) {
	if op != ws.OpText {
		return clientEvent{}, nil, &wsframe.CloseError{Code: ws.StatusInvalidFramePayloadData, Reason: "binary frames are not supported"}
	}
	var m nativeMessage
	if err := json.Unmarshal(p, &m); err != nil {
		return clientEvent{}, nil, errInvalidJSON
	}
	// Unmarshal checked the whole message, data included, and copied the
	// data: it is decoded later, by the rule pool.
	ev := clientEvent{name: m.Event, raw: m.Data, size: len(p)}
	if m.Ack != nil {
		ev.ack, ev.hasAck = *m.Ack, true
	}
	return ev, nil, nil
}

// ping is a WebSocket ping: the client's WebSocket answers it.
func (nativeCodec) ping() []byte { return framePing }

// closing: the close frame says it all.
func (nativeCodec) closing() []byte { return nil }

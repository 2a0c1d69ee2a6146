// Package wsframe decodes the frames a WebSocket client sends to the server
// (RFC 6455 section 5), incrementally and without allocating.
//
// The engine reads a socket when epoll says it is readable and hands
// whatever arrived, in any split, to the connection's Reader. A frame that
// arrives whole is unmasked in place and delivered as a sub-slice of the
// caller's bytes. Only a frame or message that is still incomplete when a
// Feed returns is copied, into a buffer from size-tiered pools that goes back
// as soon as the message is delivered; a Reader between messages holds none.
//
// Allocations: none on the whole-frame path, none for any violation, and
// in steady state none for split or fragmented messages up to 64 KiB (pooled).
// A message above 64 KiB that must be buffered is allocated exactly, growing
// with the bytes that actually arrive.
package wsframe

import (
	"encoding/binary"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// Handler receives what a Reader decodes. Slices are valid only during the
// call: they point into the caller's read buffer or into a pooled buffer.
type Handler interface {
	// OnMessage receives a complete data message: op is ws.OpText (p is
	// valid UTF-8) or ws.OpBinary (p is passed through unchecked).
	OnMessage(op ws.OpCode, p []byte)
	// OnPing receives a ping; answer with a pong carrying p.
	OnPing(p []byte)
	// OnPong receives a pong, solicited or not.
	OnPong(p []byte)
	// OnClose receives a valid close frame. code is ws.StatusNoStatusRcvd
	// (1005) when the frame had no payload (RFC 6455 section 7.1.5); that
	// code must never be sent back, answer with an empty close or 1000.
	// The Reader ignores everything fed after it.
	OnClose(code ws.StatusCode, reason []byte)
}

// Reader is the per-connection decoding state. Its zero value is ready; set
// MaxMessage before the first Feed. A Reader is not safe for concurrent use:
// one worker at a time feeds a connection.
type Reader struct {
	// MaxMessage is the largest data message in bytes, summed over its
	// fragments. A frame that would take a message past it fails with 1009
	// as soon as its header is decoded, before any of its payload is read.
	// Zero (or less) admits only empty messages: the limit fails closed.
	MaxMessage int

	buf  *[]byte     // the data message so far, when it is incomplete and non-empty
	ctl  *[]byte     // the payload so far of a control frame split across Feeds
	left int         // payload bytes of the current frame still to come; 0 while reading a header
	err  *CloseError // the violation Feed reported, reported again if it is called anyway

	hdr     [ws.MaxHeaderSize]byte // a header split across Feeds
	hdrN    uint8                  // bytes of hdr filled
	mask    [4]byte                // the current frame's masking key
	maskPos uint8                  // payload bytes of the current frame unmasked so far, mod 4
	b0      byte                   // the current frame's first byte: FIN and opcode
	msg     ws.OpCode              // opcode of the data message in progress; 0 if none
	utf8    utf8State              // validation of the text message in progress
	closed  bool                   // a close frame was delivered: ignore the rest
}

// Feed decodes p, unmasking it in place, and calls h for every complete
// message and control frame in it. It returns a *CloseError at the first
// protocol violation; the connection must then be closed with its code and
// Feed not called again (if it is, it returns the same error). After OnClose,
// Feed ignores its input and returns nil.
func (r *Reader) Feed(p []byte, h Handler) error {
	if r.err != nil {
		return r.err
	}
	for len(p) > 0 && !r.closed {
		var err *CloseError
		if r.left == 0 {
			p, err = r.readHeader(p, h)
		} else {
			p, err = r.readPayload(p, h)
		}
		if err != nil {
			r.Release()
			r.err = err
			return err
		}
	}
	return nil
}

// Idle reports whether the reader holds no partial frame or message, and so
// no buffer.
func (r *Reader) Idle() bool {
	return r.hdrN == 0 && r.left == 0 && r.msg == 0
}

// Release returns any pooled buffer and resets the Reader to its zero value,
// keeping MaxMessage; call it when the connection closes. The Reader may then
// serve another connection.
func (r *Reader) Release() {
	if r.buf != nil {
		putBuf(r.buf)
	}
	if r.ctl != nil {
		putBuf(r.ctl)
	}
	*r = Reader{MaxMessage: r.MaxMessage}
}

// readHeader decodes the next frame header from p, or keeps what there is
// of it. A frame found whole in p is delivered straight from p.
func (r *Reader) readHeader(p []byte, h Handler) ([]byte, *CloseError) {
	var hb []byte
	if n := headerLen(p); r.hdrN == 0 && n > 0 && n <= len(p) {
		hb, p = p[:n], p[n:]
	} else {
		var err *CloseError
		hb, p, err = r.fillHeader(p)
		if hb == nil || err != nil {
			return p, err
		}
	}
	fh, err := r.parseHeader(hb)
	if err != nil {
		return p, err
	}
	r.b0, r.mask, r.maskPos = hb[0], fh.Mask, 0

	if fh.OpCode.IsControl() {
		size := int(fh.Length) // <= 125, checked
		if size <= len(p) {
			ws.Cipher(p[:size], fh.Mask, 0)
			return p[size:], r.control(fh.OpCode, p[:size], h)
		}
		r.ctl = getBuf(size)
		r.left = size
		return p, nil
	}

	if fh.Length > int64(r.room()) {
		return p, errTooBig
	}
	size := int(fh.Length)
	if fh.OpCode != ws.OpContinuation {
		if fh.Fin && size <= len(p) {
			// The whole message is here: no copy.
			msg := p[:size]
			ws.Cipher(msg, fh.Mask, 0)
			if fh.OpCode == ws.OpText && !utf8.Valid(msg) {
				return p, errTextUTF8
			}
			h.OnMessage(fh.OpCode, msg)
			return p[size:], nil
		}
		r.msg = fh.OpCode
	}
	r.left = size
	if size == 0 && fh.Fin {
		return p, r.deliver(h)
	}
	return p, nil
}

// fillHeader copies header bytes from p into r.hdr and returns the header
// once it is complete. The first two bytes are checked as soon as they are
// in, so a bad frame fails without waiting for its extended length and mask.
func (r *Reader) fillHeader(p []byte) (hb, rest []byte, err *CloseError) {
	if r.hdrN < 2 {
		n := copy(r.hdr[r.hdrN:2], p)
		r.hdrN += uint8(n)
		p = p[n:]
		if r.hdrN < 2 {
			return nil, p, nil
		}
		if err := r.checkHeader(r.hdr[0], r.hdr[1]); err != nil {
			return nil, p, err
		}
	}
	size := headerLen(r.hdr[:2])
	n := copy(r.hdr[r.hdrN:size], p)
	r.hdrN += uint8(n)
	p = p[n:]
	if int(r.hdrN) < size {
		return nil, p, nil
	}
	r.hdrN = 0
	return r.hdr[:size], p, nil
}

// headerLen returns the size of the header that starts p, or 0 if p is too
// short to tell.
func headerLen(p []byte) int {
	if len(p) < 2 {
		return 0
	}
	n := 2
	if p[1]&0x80 != 0 {
		n += 4
	}
	switch p[1] & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	return n
}

// firstBytes decodes what the first two header bytes say. For the 16- and
// 64-bit forms Length is 126 or 127, a lower bound, which is enough for
// ws.CheckHeader to reject a control frame that uses them.
func firstBytes(b0, b1 byte) ws.Header {
	return ws.Header{
		Fin:    b0&0x80 != 0,
		Rsv:    (b0 >> 4) & 0x7,
		OpCode: ws.OpCode(b0 & 0x0f),
		Masked: b1&0x80 != 0,
		Length: int64(b1 & 0x7f),
	}
}

// checkHeader checks the first two header bytes against the connection's
// state: masked, no RSV bits (no extension is ever negotiated), a known
// opcode, a short final control frame, continuation only inside a message.
func (r *Reader) checkHeader(b0, b1 byte) *CloseError {
	s := ws.StateServerSide
	if r.msg != 0 {
		s |= ws.StateFragmented
	}
	if err := ws.CheckHeader(firstBytes(b0, b1), s); err != nil {
		return headerError(err)
	}
	return nil
}

// parseHeader checks and decodes a complete header.
func (r *Reader) parseHeader(hb []byte) (ws.Header, *CloseError) {
	if err := r.checkHeader(hb[0], hb[1]); err != nil {
		return ws.Header{}, err
	}
	h := firstBytes(hb[0], hb[1])
	rest := hb[2:]
	switch h.Length {
	case 126:
		h.Length = int64(binary.BigEndian.Uint16(rest))
		rest = rest[2:]
	case 127:
		n := binary.BigEndian.Uint64(rest)
		if n>>63 != 0 {
			return h, errLengthMSB
		}
		h.Length = int64(n)
		rest = rest[8:]
	}
	copy(h.Mask[:], rest)
	return h, nil
}

// room is how many more bytes the data message may take.
func (r *Reader) room() int {
	n := max(r.MaxMessage, 0)
	if r.buf != nil {
		n -= len(*r.buf)
	}
	return n
}

// readPayload consumes payload bytes of the current frame from p.
func (r *Reader) readPayload(p []byte, h Handler) ([]byte, *CloseError) {
	n := min(r.left, len(p))
	chunk, rest := p[:n], p[n:]
	ws.Cipher(chunk, r.mask, int(r.maskPos))
	r.maskPos = uint8((int(r.maskPos) + n) % 4)
	r.left -= n

	if op := ws.OpCode(r.b0 & 0x0f); op.IsControl() {
		*r.ctl = append(*r.ctl, chunk...)
		if r.left > 0 {
			return rest, nil
		}
		bp := r.ctl
		r.ctl = nil
		err := r.control(op, *bp, h)
		putBuf(bp)
		return rest, err
	}

	if r.msg == ws.OpText {
		var ok bool
		if r.utf8, ok = r.utf8.validate(chunk); !ok {
			return rest, errTextUTF8
		}
	}
	r.appendData(chunk)
	if r.left > 0 || r.b0&0x80 == 0 {
		return rest, nil
	}
	return rest, r.deliver(h)
}

// appendData adds c to the message buffer. A buffer is sized for the end
// of the current frame, trusting its declared length up to maxTier.
func (r *Reader) appendData(c []byte) {
	if r.buf == nil {
		r.buf = getBuf(growCap(0, len(c), len(c)+r.left))
	} else if have := len(*r.buf); have+len(c) > cap(*r.buf) {
		nb := getBuf(growCap(cap(*r.buf), have+len(c), have+len(c)+r.left))
		*nb = append(*nb, *r.buf...)
		putBuf(r.buf)
		r.buf = nb
	}
	*r.buf = append(*r.buf, c...)
}

// deliver hands the completed data message to h and returns its buffer.
func (r *Reader) deliver(h Handler) *CloseError {
	if r.msg == ws.OpText && r.utf8 != 0 {
		return errTextUTF8 // the message ends inside a character
	}
	op, bp := r.msg, r.buf
	r.msg, r.buf, r.utf8 = 0, nil, 0
	if bp == nil {
		h.OnMessage(op, nil)
		return nil
	}
	h.OnMessage(op, *bp)
	putBuf(bp)
	return nil
}

// control dispatches a complete, unmasked control frame payload.
func (r *Reader) control(op ws.OpCode, p []byte, h Handler) *CloseError {
	switch op {
	case ws.OpPing:
		h.OnPing(p)
	case ws.OpPong:
		h.OnPong(p)
	case ws.OpClose:
		code, err := closeCode(p)
		if err != nil {
			return err
		}
		if r.buf != nil {
			putBuf(r.buf) // an unfinished message is dropped
		}
		r.buf, r.msg, r.closed = nil, 0, true
		h.OnClose(code, p[min(2, len(p)):])
	}
	return nil
}

// closeCode validates a close frame payload (RFC 6455 sections 5.5.1, 7.4).
func closeCode(p []byte) (ws.StatusCode, *CloseError) {
	switch len(p) {
	case 0:
		return ws.StatusNoStatusRcvd, nil
	case 1:
		return 0, errCloseShort
	}
	code, reason := ws.ParseCloseFrameDataUnsafe(p)
	if code >= 5000 {
		return 0, errCloseCode // ws.CheckCloseFrameData lets these through
	}
	if code >= 1012 && code <= 1014 {
		// Registered with IANA after RFC 6455 (service restart, try again
		// later, bad gateway); gobwas/ws predates them. Accept them, as
		// current Autobahn does; the reason must still be UTF-8.
		if !utf8.ValidString(reason) {
			return 0, errCloseReasonUTF8
		}
		return code, nil
	}
	switch ws.CheckCloseFrameData(code, reason) {
	case nil:
		return code, nil
	case ws.ErrProtocolInvalidUTF8:
		return 0, errCloseReasonUTF8
	}
	return 0, errCloseCode
}

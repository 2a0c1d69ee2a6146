package wsframe

import "github.com/gobwas/ws"

// CloseError is a protocol violation: the connection must be closed with
// Code, and Reason may go in the close frame (it is short enough to fit).
//
// Feed returns shared, preallocated values so that failing costs no
// allocation; treat them as read-only and match them with errors.As.
type CloseError struct {
	Code   ws.StatusCode
	Reason string
}

func (e *CloseError) Error() string {
	return "wsframe: " + e.Reason
}

func protocolError(reason string) *CloseError {
	return &CloseError{Code: ws.StatusProtocolError, Reason: reason}
}

// Violations Feed reports. Those detected by ws.CheckHeader and
// ws.CheckCloseFrameData carry gobwas/ws's wording.
var (
	errMaskRequired           = protocolError(ws.ErrProtocolMaskRequired.Error())
	errNonZeroRsv             = protocolError(ws.ErrProtocolNonZeroRsv.Error())
	errOpCodeReserved         = protocolError(ws.ErrProtocolOpCodeReserved.Error())
	errControlPayloadOverflow = protocolError(ws.ErrProtocolControlPayloadOverflow.Error())
	errControlNotFinal        = protocolError(ws.ErrProtocolControlNotFinal.Error())
	errContinuationExpected   = protocolError(ws.ErrProtocolContinuationExpected.Error())
	errContinuationUnexpected = protocolError(ws.ErrProtocolContinuationUnexpected.Error())
	errLengthMSB              = protocolError("64-bit payload length with the most significant bit set")
	errCloseShort             = protocolError("close frame payload of 1 byte")
	errCloseCode              = protocolError("invalid close code")

	errCloseReasonUTF8 = &CloseError{Code: ws.StatusInvalidFramePayloadData, Reason: "invalid UTF-8 in close reason"}
	errTextUTF8        = &CloseError{Code: ws.StatusInvalidFramePayloadData, Reason: "invalid UTF-8 in text message"}
	errTooBig          = &CloseError{Code: ws.StatusMessageTooBig, Reason: "message too big"}
)

// headerError maps a ws.CheckHeader error to its CloseError.
func headerError(err error) *CloseError {
	switch err {
	case ws.ErrProtocolMaskRequired:
		return errMaskRequired
	case ws.ErrProtocolNonZeroRsv:
		return errNonZeroRsv
	case ws.ErrProtocolOpCodeReserved:
		return errOpCodeReserved
	case ws.ErrProtocolControlPayloadOverflow:
		return errControlPayloadOverflow
	case ws.ErrProtocolControlNotFinal:
		return errControlNotFinal
	case ws.ErrProtocolContinuationExpected:
		return errContinuationExpected
	case ws.ErrProtocolContinuationUnexpected:
		return errContinuationUnexpected
	}
	// A check gobwas/ws adds later: still a protocol error. This allocates,
	// which is fine once per connection.
	return protocolError(err.Error())
}

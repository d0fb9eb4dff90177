// Package flashsale holds the domain of the flash-sale system: sales, orders,
// their books, and the application error codes every layer speaks.
//
// The packages below it adapt this domain to the outside world: stock/ and
// lua/ to Redis, order/ to Kafka, api/ to HTTP, cluster/ to processes.
package flashsale

import (
	"errors"
	"fmt"
)

// Application error codes. Each maps to exactly one HTTP status in api/.
const (
	ECONFLICT      = "conflict"           // the thing already exists or is in another state
	EINVALID       = "invalid"            // the request is malformed or out of range
	ENOTFOUND      = "not_found"          // no such sale, order or envelope
	EUNAUTHORIZED  = "unauthorized"       // bearer token (buyer or admin) missing, invalid or expired
	EFORBIDDEN     = "forbidden"          // the token's user is not the one the request names
	ERATELIMITED   = "rate_limited"       // too many requests from this user or IP; retry after Retry-After
	EINTERNAL      = "internal"           // a bug or an unexpected reply
	ESOLDOUT       = "sold_out"           // no unit left
	ELIMITREACHED  = "limit_reached"      // the user already holds the most the sale allows
	ENOTSTARTED    = "not_started"        // the sale opens later
	EENDED         = "ended"              // the sale has closed
	EEXPIRED       = "expired"            // the order's pay deadline passed
	EUNAVAILABLE   = "unavailable"        // a dependency (Redis, Kafka) is down
	EOVERLOADED    = "overloaded"         // a bounded queue is full; retry later
	ETOOLARGE      = "too_large"          // the request body is over the cap
	EEMPTY         = "empty"              // an envelope has no share left
	EALREADYOPENED = "already_opened"     // the user opened this envelope before
	EINSUFFICIENT  = "insufficient_funds" // the wallet's balance does not cover the envelope
	ENOTADMITTED   = "not_admitted"       // the sale has a waiting room and this buyer's turn has not come
)

// Error is an application error: a code for programs and a message for people.
// Internal details belong in logs, never in Message.
type Error struct {
	Code    string
	Message string
}

// Error implements the error interface.
func (e *Error) Error() string {
	return fmt.Sprintf("flashsale error: code=%s message=%s", e.Code, e.Message)
}

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the application error in err's chain,
// EINTERNAL for any other non-nil error, and "" for nil.
func ErrorCode(err error) string {
	if e, ok := err.(*Error); ok {
		return e.Code // the common, unwrapped case costs no allocation
	}
	var e *Error
	if err == nil {
		return ""
	} else if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the human message of the application error in err's
// chain, and a generic text for anything else so internals do not leak.
func ErrorMessage(err error) string {
	if e, ok := err.(*Error); ok {
		return e.Message
	}
	var e *Error
	if err == nil {
		return ""
	} else if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}

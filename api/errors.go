// Package api is flashsale's HTTP interface (gin): routes, request
// validation, body caps, admin auth, overload protection, metrics, and the
// one place application error codes become HTTP statuses.
package api

import (
	"net/http"
	"strconv"
	"sync"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/internal/jsonw"
	"github.com/gin-gonic/gin"
)

// statusOf is the one mapping of application error codes to HTTP statuses.
var statusOf = map[string]int{
	flashsale.EINVALID:       http.StatusBadRequest,
	flashsale.ETOOLARGE:      http.StatusRequestEntityTooLarge,
	flashsale.EUNAUTHORIZED:  http.StatusUnauthorized,
	flashsale.EFORBIDDEN:     http.StatusForbidden,
	flashsale.ERATELIMITED:   http.StatusTooManyRequests,
	flashsale.EINSUFFICIENT:  http.StatusConflict,
	flashsale.ENOTFOUND:      http.StatusNotFound,
	flashsale.ECONFLICT:      http.StatusConflict,
	flashsale.ESOLDOUT:       http.StatusConflict,
	flashsale.ELIMITREACHED:  http.StatusConflict,
	flashsale.ENOTSTARTED:    http.StatusConflict,
	flashsale.EENDED:         http.StatusConflict,
	flashsale.EEMPTY:         http.StatusConflict,
	flashsale.EALREADYOPENED: http.StatusConflict,
	flashsale.ENOTADMITTED:   http.StatusForbidden,
	flashsale.EEXPIRED:       http.StatusGone,
	flashsale.EUNAVAILABLE:   http.StatusServiceUnavailable,
	flashsale.EOVERLOADED:    http.StatusServiceUnavailable,
	flashsale.EINTERNAL:      http.StatusInternalServerError,
}

// StatusOf returns the HTTP status of an application error code.
func StatusOf(code string) int {
	if s, ok := statusOf[code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// AppendError appends the JSON error body {"error":{"code":..,"message":..}}.
func AppendError(b []byte, code, message string) []byte {
	b = append(b, `{"error":{`...)
	b = jsonw.StrField(b, "code", code)
	b = jsonw.StrField(b, "message", message)
	return append(b, '}', '}')
}

var (
	retryAfter = []string{"1"}
	// jsonType is shared by every response writeJSON writes: net/http copies
	// the header map before writing, never its value slices.
	jsonType = []string{"application/json"}
)

// writeJSON answers status with a body that is already JSON. It sets the
// header itself because gin's c.Data allocates a fresh []string for the
// Content-Type of every response; on the buy path that is one of the few
// allocations left.
//
// It sets Content-Length too: nbio otherwise streams the reply chunked
// (a length line, the body, a terminating chunk), more bytes to write and
// for every client to parse; net/http computes the same length itself for
// a body this small, so its replies do not change.
func writeJSON(c *gin.Context, status int, body []byte) {
	h := c.Writer.Header()
	h["Content-Type"] = jsonType
	h["Content-Length"] = contentLength(len(body))
	c.Status(status)
	_, _ = c.Writer.Write(body)
}

// contentLengths holds the Content-Length header values of the small
// bodies every hot path answers with, so setting one allocates nothing.
var contentLengths = func() (v [1024][]string) {
	for i := range v {
		v[i] = []string{strconv.Itoa(i)}
	}
	return v
}()

func contentLength(n int) []string {
	if n < len(contentLengths) {
		return contentLengths[n]
	}
	return []string{strconv.Itoa(n)}
}

// errAtCapacity is the refusal admission sends: a package-level value so
// its body is rendered once, keeping a refusal as cheap as it can be while
// the node is overloaded.
var errAtCapacity = &flashsale.Error{Code: flashsale.EOVERLOADED, Message: "node is at capacity; retry shortly"}

// rendered caches the bodies of application errors that are package-level
// values (sold out, limit reached, ...): the hot paths answer them with no
// encoding and no allocation.
var rendered sync.Map // *flashsale.Error -> []byte

// writeError answers err. Internal details stay in the log, never the body.
func (s *Server) writeError(c *gin.Context, err error) {
	code := flashsale.ErrorCode(err)
	if code == flashsale.EINTERNAL {
		s.log.Error("internal error", "path", c.FullPath(), "err", err)
	}
	var body []byte
	if e, ok := err.(*flashsale.Error); ok {
		if b, ok := rendered.Load(e); ok {
			body = b.([]byte)
		}
	}
	if body == nil {
		body = AppendError(nil, code, flashsale.ErrorMessage(err))
	}
	status := StatusOf(code)
	if status == http.StatusServiceUnavailable {
		// Overload and outages pass in about a second; a client that waits
		// that long instead of retrying at once keeps a storm from forming.
		c.Writer.Header()["Retry-After"] = retryAfter
	}
	writeJSON(c, status, body)
	c.Abort()
}

// PreRender caches the JSON bodies of errors that are answered often and
// never change; call it at start-up with package-level error values.
func PreRender(errs ...*flashsale.Error) {
	for _, e := range errs {
		rendered.Store(e, AppendError(nil, e.Code, e.Message))
	}
}

// errorf answers a new application error.
func (s *Server) errorf(c *gin.Context, code, format string, args ...any) {
	s.writeError(c, flashsale.Errorf(code, format, args...))
}

package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"hash"
	"time"

	"github.com/flashsale/flashsale"
)

// The fast path. Profiled on the sold-out answer (bench/RESULTS.md, issue
// 11), golang-jwt costs ~4 µs and ~30 allocations per token — decoding the
// header and the claims with encoding/json into maps and structs — which
// alone is more than the rest of a sold-out answer. The cluster issues one
// shape of token: a canonical HS256 header and a flat claims object. For
// exactly that shape this file checks the HMAC and reads sub/exp/nbf/iat
// with a small scanner, allocating only the subject string. Anything else —
// another header, an escape, a nested or non-integer value, a duplicate or
// unknown claim — falls back to the library, so the fast path can only
// agree with it or defer to it (FuzzFastAgreesWithLibrary checks both).

type fastResult int

const (
	fastFallback fastResult = iota // not the one shape: ask the library
	fastOK                         // valid; the library would say the same
	fastBad                        // invalid; the library would say the same
)

// fastHeaders are the header segments the fast path knows: HS256 with and
// without typ, in either key order, as base64url.
var fastHeaders = [...]string{
	b64(`{"alg":"HS256","typ":"JWT"}`),
	b64(`{"typ":"JWT","alg":"HS256"}`),
	b64(`{"alg":"HS256"}`),
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// maxFastPayload bounds the decoded claims the fast path reads in place.
const maxFastPayload = 384

// fastMAC is one pooled HMAC-SHA256 with its scratch buffers.
type fastMAC struct {
	h   hash.Hash
	msg []byte
	pl  [maxFastPayload]byte
	sig [32]byte
	sum [sha256.Size]byte
}

func newFastMAC(key []byte) *fastMAC {
	return &fastMAC{h: hmac.New(sha256.New, key), msg: make([]byte, 0, 512)}
}

func (v *Verifier) fast(token string) (string, fastResult) {
	i := indexByte(token, '.', 0)
	if i < 0 || !isFastHeader(token[:i]) {
		return "", fastFallback
	}
	j := indexByte(token, '.', i+1)
	if j < 0 || len(token)-j-1 != 43 || (j-i-1)*3/4 > maxFastPayload {
		return "", fastFallback
	}
	m := v.macs.Get().(*fastMAC)
	defer v.macs.Put(m)
	if n, ok := decodeB64(m.sig[:], token[j+1:]); !ok || n != 32 {
		return "", fastFallback
	}
	m.msg = append(m.msg[:0], token[:j]...)
	m.h.Reset()
	m.h.Write(m.msg)
	if !hmac.Equal(m.h.Sum(m.sum[:0]), m.sig[:]) {
		return "", fastBad
	}
	n, ok := decodeB64(m.pl[:], token[i+1:j])
	if !ok {
		return "", fastFallback
	}
	c, res := scanClaims(m.pl[:n])
	if res != fastOK {
		return "", res
	}
	now := v.now()
	switch {
	case !c.hasExp, !now.Before(time.Unix(c.exp, 0)),
		c.hasNbf && now.Before(time.Unix(c.nbf, 0)),
		c.hasIat && now.Before(time.Unix(c.iat, 0)),
		!flashsale.ValidIDBytes(c.sub):
		return "", fastBad
	}
	return string(c.sub), fastOK
}

func isFastHeader(h string) bool {
	for _, f := range fastHeaders {
		if h == f {
			return true
		}
	}
	return false
}

func indexByte(s string, c byte, from int) int {
	for k := from; k < len(s); k++ {
		if s[k] == c {
			return k
		}
	}
	return -1
}

// b64val maps a base64url character to its value, 0xFF for any other byte.
var b64val = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xFF
	}
	const alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for i := 0; i < len(alpha); i++ {
		t[alpha[i]] = byte(i)
	}
	return t
}()

// decodeB64 decodes unpadded base64url s into dst without allocating. It
// accepts exactly what base64.RawURLEncoding does except newlines (which
// that decoder skips); those, and a dst too small, report false.
func decodeB64(dst []byte, s string) (int, bool) {
	if len(s)%4 == 1 || len(s)/4*3+len(s)%4 > len(dst)+1 {
		return 0, false
	}
	n := 0
	var acc uint32
	bits := 0
	for k := 0; k < len(s); k++ {
		v := b64val[s[k]]
		if v == 0xFF {
			return 0, false
		}
		acc = acc<<6 | uint32(v)
		bits += 6
		if bits >= 8 {
			bits -= 8
			if n == len(dst) {
				return 0, false
			}
			dst[n] = byte(acc >> bits)
			n++
		}
	}
	return n, true
}

// fastClaims are the claims the fast path reads. sub aliases the decoded
// payload buffer.
type fastClaims struct {
	sub                    []byte
	exp, nbf, iat          int64
	hasExp, hasNbf, hasIat bool
}

// scanClaims reads a flat JSON object whose keys are among sub, exp, nbf,
// iat, iss and jti, each at most once, with escape-free ASCII strings and
// non-negative integers of at most 15 digits. Anything else is fastFallback.
func scanClaims(p []byte) (fastClaims, fastResult) {
	var c fastClaims
	var seen [6]bool
	k := skipWS(p, 0)
	if k >= len(p) || p[k] != '{' {
		return c, fastFallback
	}
	k = skipWS(p, k+1)
	if k < len(p) && p[k] == '}' {
		return c, fastEnd(p, k+1)
	}
	for {
		key, next, ok := scanString(p, k)
		if !ok {
			return c, fastFallback
		}
		k = skipWS(p, next)
		if k >= len(p) || p[k] != ':' {
			return c, fastFallback
		}
		k = skipWS(p, k+1)
		slot := -1
		switch string(key) { // a switch on string(bytes) does not allocate
		case "sub":
			slot = 0
		case "exp":
			slot = 1
		case "nbf":
			slot = 2
		case "iat":
			slot = 3
		case "iss":
			slot = 4
		case "jti":
			slot = 5
		}
		if slot < 0 || seen[slot] {
			return c, fastFallback
		}
		seen[slot] = true
		if slot == 0 || slot >= 4 {
			s, next, ok := scanString(p, k)
			if !ok {
				return c, fastFallback
			}
			if slot == 0 {
				c.sub = s
			}
			k = next
		} else {
			n, next, ok := scanInt(p, k)
			if !ok {
				return c, fastFallback
			}
			switch slot {
			case 1:
				c.exp, c.hasExp = n, true
			case 2:
				c.nbf, c.hasNbf = n, true
			case 3:
				c.iat, c.hasIat = n, true
			}
			k = next
		}
		k = skipWS(p, k)
		if k >= len(p) {
			return c, fastFallback
		}
		if p[k] == '}' {
			return c, fastEnd(p, k+1)
		}
		if p[k] != ',' {
			return c, fastFallback
		}
		k = skipWS(p, k+1)
	}
}

func fastEnd(p []byte, k int) fastResult {
	if skipWS(p, k) != len(p) {
		return fastFallback
	}
	return fastOK
}

func skipWS(p []byte, k int) int {
	for k < len(p) && (p[k] == ' ' || p[k] == '\t' || p[k] == '\n' || p[k] == '\r') {
		k++
	}
	return k
}

// scanString reads a string of printable ASCII without escapes at p[k].
func scanString(p []byte, k int) ([]byte, int, bool) {
	if k >= len(p) || p[k] != '"' {
		return nil, 0, false
	}
	for e := k + 1; e < len(p); e++ {
		switch c := p[e]; {
		case c == '"':
			return p[k+1 : e], e + 1, true
		case c == '\\' || c < 0x20 || c >= 0x7F:
			return nil, 0, false
		}
	}
	return nil, 0, false
}

// scanInt reads a non-negative JSON integer of at most 15 digits (exact as
// a float64, which is how the library reads NumericDate).
func scanInt(p []byte, k int) (int64, int, bool) {
	s := k
	var n int64
	for k < len(p) && p[k] >= '0' && p[k] <= '9' {
		n = n*10 + int64(p[k]-'0')
		k++
	}
	d := k - s
	if d == 0 || d > 15 || (d > 1 && p[s] == '0') {
		return 0, 0, false
	}
	if k < len(p) && (p[k] == '.' || p[k] == 'e' || p[k] == 'E') {
		return 0, 0, false
	}
	return n, k, true
}

// Minter signs tokens of the fast path's shape, reusing one HMAC: the
// bench client mints a token per request with it. Not safe for concurrent
// use; give each goroutine its own.
type Minter struct {
	h   hash.Hash
	buf []byte
	sum [sha256.Size]byte
}

// NewMinter returns a Minter for secret.
func NewMinter(secret []byte) *Minter {
	return &Minter{h: hmac.New(sha256.New, secret), buf: make([]byte, 0, 256)}
}

// Append appends an HS256 token for sub expiring at exp (unix seconds).
func (m *Minter) Append(dst []byte, sub string, exp int64) []byte {
	return appendToken(m, dst, sub, exp)
}

// AppendBytes is Append with the subject in a byte slice (no string to build).
func (m *Minter) AppendBytes(dst, sub []byte, exp int64) []byte { return appendToken(m, dst, sub, exp) }

func appendToken[S string | []byte](m *Minter, dst []byte, sub S, exp int64) []byte {
	m.buf = append(m.buf[:0], `{"sub":"`...)
	m.buf = append(m.buf, sub...)
	m.buf = append(m.buf, `","exp":`...)
	m.buf = appendInt(m.buf, exp)
	m.buf = append(m.buf, '}')
	start := len(dst)
	dst = append(dst, fastHeaders[0]...)
	dst = append(dst, '.')
	dst = base64.RawURLEncoding.AppendEncode(dst, m.buf)
	m.h.Reset()
	m.h.Write(dst[start:])
	dst = append(dst, '.')
	return base64.RawURLEncoding.AppendEncode(dst, m.h.Sum(m.sum[:0]))
}

func appendInt(b []byte, n int64) []byte {
	var d [20]byte
	i := len(d)
	if n == 0 {
		return append(b, '0')
	}
	for n > 0 {
		i--
		d[i] = byte('0' + n%10)
		n /= 10
	}
	return append(b, d[i:]...)
}

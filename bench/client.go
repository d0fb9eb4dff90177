package bench

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"
)

// This file is the generator's HTTP/1.1 client: one keep-alive net.Conn per
// (worker, target), requests written from a reused byte buffer and responses
// parsed in place from a bufio.Reader. It exists because net/http's client
// costs several allocations and a goroutine hand-off per request, and on a
// 2-core box every cycle the generator burns is a cycle the server under test
// does not get (see BenchmarkClientRaw vs BenchmarkClientNetHTTP and the
// numbers in README.md).

// maxBody caps a response body; a larger one is treated as a protocol error
// rather than buffered, so a misbehaving server cannot make the generator
// allocate without bound.
const maxBody = 1 << 20

// errProtocol marks a response the parser could not make sense of.
var errProtocol = errors.New("bench: malformed HTTP response")

// response is one parsed HTTP response. Its slices point into buffers owned
// by the connection and are valid only until the next request on it.
type response struct {
	status int
	node   []byte // X-Flashsale-Node header value
	body   []byte
	close  bool // the server asked to close the connection
}

// target is one base URL split into what a raw request needs.
type target struct {
	base string // as given, e.g. http://127.0.0.1:8080
	addr string // host:port to dial
	host string // Host header value
}

// parseTarget accepts "http://host:port" or a bare "host:port". https is
// refused: the generator speaks plain HTTP/1.1 on loopback or a LAN.
func parseTarget(s string) (target, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return target{}, fmt.Errorf("target %q: %w", s, err)
	}
	if u.Scheme != "http" {
		return target{}, fmt.Errorf("target %q: only http:// is supported", s)
	}
	if u.Host == "" {
		return target{}, fmt.Errorf("target %q: no host", s)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	return target{base: strings.TrimRight(u.Scheme+"://"+u.Host, "/"), addr: addr, host: u.Host}, nil
}

// conn is one keep-alive connection. It is owned by a single worker and is
// not safe for concurrent use.
type conn struct {
	t       target
	nc      net.Conn
	r       *bufio.Reader
	body    []byte // reused body buffer
	timeout time.Duration
}

func newConn(t target, timeout time.Duration) *conn {
	return &conn{t: t, timeout: timeout, body: make([]byte, 0, 4096)}
}

// roundTrip writes req (a complete HTTP/1.1 request) and parses the reply
// into resp. On any error the connection is closed so the next call dials a
// fresh one; a half-read response must never be mistaken for the next one.
func (c *conn) roundTrip(req []byte, resp *response) error {
	if c.nc == nil {
		nc, err := net.DialTimeout("tcp", c.t.addr, c.timeout)
		if err != nil {
			return err
		}
		if tc, ok := nc.(*net.TCPConn); ok {
			_ = tc.SetNoDelay(true)
		}
		c.nc = nc
		if c.r == nil {
			c.r = bufio.NewReaderSize(nc, 16<<10)
		} else {
			c.r.Reset(nc)
		}
	}
	// One deadline per request: a stuck server shows up as a timeout error
	// in the report instead of a stalled worker.
	if c.timeout > 0 {
		_ = c.nc.SetDeadline(time.Now().Add(c.timeout))
	}
	if _, err := c.nc.Write(req); err != nil {
		c.close()
		return err
	}
	var err error
	c.body, err = readResponse(c.r, resp, c.body[:0])
	if err != nil {
		c.close()
		return err
	}
	if resp.close {
		c.close()
	}
	return nil
}

func (c *conn) close() {
	if c.nc != nil {
		_ = c.nc.Close()
		c.nc = nil
	}
}

// readResponse parses one HTTP/1.x response from r. The body is appended to
// buf (which is returned, possibly grown) and resp.body aliases it; the node
// header aliases r's buffer only until the body is read, so it is copied
// into the tail of buf as well.
func readResponse(r *bufio.Reader, resp *response, buf []byte) ([]byte, error) {
	*resp = response{}
	line, err := r.ReadSlice('\n')
	if err != nil {
		return buf, err
	}
	// "HTTP/1.1 201 Created\r\n"
	if len(line) < 12 || string(line[:5]) != "HTTP/" || line[8] != ' ' {
		return buf, errProtocol
	}
	status := 0
	for _, ch := range line[9:12] {
		if ch < '0' || ch > '9' {
			return buf, errProtocol
		}
		status = status*10 + int(ch-'0')
	}
	resp.status = status
	if string(line[5:8]) == "1.0" {
		resp.close = true
	}
	contentLength := -1
	chunked := false
	var node [64]byte
	nodeLen := 0
	for {
		line, err = r.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return buf, errProtocol
			}
			return buf, err
		}
		line = trimCRLF(line)
		if len(line) == 0 {
			break
		}
		colon := indexByte(line, ':')
		if colon <= 0 {
			return buf, errProtocol
		}
		name, value := line[:colon], trimSpace(line[colon+1:])
		switch {
		case equalFold(name, "content-length"):
			n, ok := atoi(value)
			if !ok || n > maxBody {
				return buf, errProtocol
			}
			contentLength = n
		case equalFold(name, "transfer-encoding"):
			chunked = equalFold(value, "chunked")
		case equalFold(name, "connection"):
			if equalFold(value, "close") {
				resp.close = true
			}
		case equalFold(name, "x-flashsale-node"):
			nodeLen = copy(node[:], value)
		}
	}
	// Responses that never carry a body, whatever the headers say.
	if status/100 == 1 || status == 204 || status == 304 {
		contentLength = 0
		chunked = false
	}
	start := len(buf)
	switch {
	case chunked:
		buf, err = readChunked(r, buf)
		if err != nil {
			return buf, err
		}
	case contentLength >= 0:
		buf, err = readN(r, buf, contentLength)
		if err != nil {
			return buf, err
		}
	default:
		// No length and not chunked: the body runs to EOF (HTTP/1.0 style).
		resp.close = true
		for {
			if len(buf)-start > maxBody {
				return buf, errProtocol
			}
			b, err := r.ReadSlice('\n')
			buf = append(buf, b...)
			if err == nil || errors.Is(err, bufio.ErrBufferFull) {
				continue
			}
			if errors.Is(err, io.EOF) {
				break
			}
			return buf, err
		}
	}
	bodyEnd := len(buf)
	buf = append(buf, node[:nodeLen]...)
	resp.body = buf[start:bodyEnd]
	resp.node = buf[bodyEnd:]
	return buf, nil
}

func readN(r *bufio.Reader, buf []byte, n int) ([]byte, error) {
	for n > 0 {
		b, err := r.Peek(min(n, r.Size()))
		if len(b) == 0 && err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return buf, err
		}
		buf = append(buf, b...)
		_, _ = r.Discard(len(b))
		n -= len(b)
	}
	return buf, nil
}

func readChunked(r *bufio.Reader, buf []byte) ([]byte, error) {
	start := len(buf)
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return buf, err
		}
		line = trimCRLF(line)
		if i := indexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		size, ok := atohex(trimSpace(line))
		if !ok || size > maxBody || len(buf)-start+size > maxBody {
			return buf, errProtocol
		}
		if size == 0 {
			// Skip trailers up to the empty line.
			for {
				line, err = r.ReadSlice('\n')
				if err != nil {
					return buf, err
				}
				if len(trimCRLF(line)) == 0 {
					return buf, nil
				}
			}
		}
		if buf, err = readN(r, buf, size); err != nil {
			return buf, err
		}
		line, err = r.ReadSlice('\n')
		if err != nil {
			return buf, err
		}
		if len(trimCRLF(line)) != 0 {
			return buf, errProtocol
		}
	}
}

func trimCRLF(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
	}
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	return b
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// equalFold reports whether b equals the lower-case ASCII string s, ignoring
// case, without allocating.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

func atoi(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 9 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func atohex(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 7 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		switch {
		case '0' <= c && c <= '9':
			n = n*16 + int(c-'0')
		case 'a' <= c && c <= 'f':
			n = n*16 + int(c-'a'+10)
		case 'A' <= c && c <= 'F':
			n = n*16 + int(c-'A'+10)
		default:
			return 0, false
		}
	}
	return n, true
}

// jsonField returns the raw value of the first "key": in body — the bytes
// between the quotes for a string, the token for a number or literal — and
// whether it was found. It is a scanner for the server's own small, flat
// replies, not a JSON parser: it does not unescape and it matches the key
// wherever it appears, which is enough for {"error":{"code":"sold_out"}}
// and {"order_id":"s1.42",...} and costs no allocation.
func jsonField(body []byte, key string) ([]byte, bool) {
	for i := 0; i+len(key)+2 < len(body); i++ {
		if body[i] != '"' || string(body[i+1:i+1+len(key)]) != key || body[i+1+len(key)] != '"' {
			continue
		}
		j := i + len(key) + 2
		for j < len(body) && (body[j] == ' ' || body[j] == '\t' || body[j] == '\n' || body[j] == '\r') {
			j++
		}
		if j >= len(body) || body[j] != ':' {
			continue
		}
		j++
		for j < len(body) && (body[j] == ' ' || body[j] == '\t' || body[j] == '\n' || body[j] == '\r') {
			j++
		}
		if j >= len(body) {
			return nil, false
		}
		if body[j] == '"' {
			k := j + 1
			for k < len(body) && body[k] != '"' {
				if body[k] == '\\' {
					k++
				}
				k++
			}
			if k >= len(body) {
				return nil, false
			}
			return body[j+1 : k], true
		}
		k := j
		for k < len(body) && body[k] != ',' && body[k] != '}' && body[k] != ']' && body[k] != ' ' && body[k] != '\n' && body[k] != '\r' && body[k] != '\t' {
			k++
		}
		return body[j:k], true
	}
	return nil, false
}

// jsonInt parses an integer field, reporting false when absent or not an
// integer.
func jsonInt(body []byte, key string) (int64, bool) {
	v, ok := jsonField(body, key)
	if !ok || len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	neg := false
	if v[0] == '-' {
		neg, v = true, v[1:]
		if len(v) == 0 {
			return 0, false
		}
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

package holdload

import "bytes"

// parse reads one HTTP/1.1 reply from b into r. total is the reply's length
// in bytes, 0 when b does not hold all of it yet; keep says the connection
// stays open after it. Bodies come with a Content-Length (net/http adds one
// to small replies) or chunked (nbio streams what the handler writes); a
// complete chunked body is decoded in place in b, so r.Body is contiguous.
func parse(b []byte, r *Reply) (total int, keep bool, err error) {
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 {
		if len(b) > 8<<10 {
			return 0, false, ErrMalformed
		}
		return 0, false, nil
	}
	head := b[:end]
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return 0, false, ErrMalformed
	}
	status, ok := atoi(line[9:12])
	if !ok || status < 100 || status > 599 {
		return 0, false, ErrMalformed
	}
	keep = line[7] == '1'
	cl := -1
	chunked := false
	for len(rest) > 0 {
		var h []byte
		h, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		k, v, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			return 0, false, ErrMalformed
		}
		v = bytes.TrimSpace(v)
		switch {
		case equalFold(k, "content-length"):
			if cl, ok = atoi(v); !ok {
				return 0, false, ErrMalformed
			}
		case equalFold(k, "transfer-encoding"):
			if !equalFold(v, "chunked") {
				return 0, false, ErrMalformed
			}
			chunked = true
		case equalFold(k, "connection"):
			keep = !equalFold(v, "close")
		case equalFold(k, "x-flashsale-node"):
			r.Node = v
		}
	}
	if chunked {
		n, blen, err := dechunk(b[end+4:])
		if err != nil || n == 0 {
			return 0, false, err
		}
		r.Status = status
		r.Body = b[end+4 : end+4+blen]
		return end + 4 + n, keep, nil
	}
	if cl < 0 {
		return 0, false, ErrMalformed
	}
	total = end + 4 + cl
	if len(b) < total {
		return 0, false, nil
	}
	r.Status = status
	r.Body = b[end+4 : total]
	return total, keep, nil
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

// dechunk decodes the chunked body at the start of b: n is the bytes it
// spans (0: not all there yet, and b is left untouched), and once complete
// its data is moved to the front of b, blen bytes long. Trailers are not
// supported (nobody sends them here).
func dechunk(b []byte) (n, blen int, err error) {
	type span struct{ from, to int }
	spans := make([]span, 0, 8) // stays on the stack for the usual one or two chunks
	i := 0
	for {
		eol := bytes.Index(b[i:], []byte("\r\n"))
		if eol < 0 {
			if len(b)-i > 32 {
				return 0, 0, ErrMalformed
			}
			return 0, 0, nil
		}
		sz, ok := atohex(b[i : i+eol])
		if !ok {
			return 0, 0, ErrMalformed
		}
		i += eol + 2
		if sz == 0 {
			if len(b) < i+2 {
				return 0, 0, nil
			}
			if b[i] != '\r' || b[i+1] != '\n' {
				return 0, 0, ErrMalformed
			}
			i += 2
			break
		}
		if len(b) < i+sz+2 {
			return 0, 0, nil
		}
		if b[i+sz] != '\r' || b[i+sz+1] != '\n' {
			return 0, 0, ErrMalformed
		}
		spans = append(spans, span{i, i + sz})
		i += sz + 2
	}
	// Each chunk moves left over the size lines before it (copy handles
	// the overlap).
	for _, sp := range spans {
		blen += copy(b[blen:], b[sp.from:sp.to])
	}
	return i, blen, nil
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
			n = n*16 + int(c-'a') + 10
		case 'A' <= c && c <= 'F':
			n = n*16 + int(c-'A') + 10
		default:
			return 0, false
		}
	}
	return n, true
}

package holdload

import "bytes"

// parse reads one HTTP/1.1 reply from b into r. total is the reply's length
// in bytes, 0 when b does not hold all of it yet; keep says the connection
// stays open after it. Only Content-Length bodies are supported (the nodes
// send nothing else on these routes); chunked replies are ErrMalformed.
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
			return 0, false, ErrMalformed
		case equalFold(k, "connection"):
			keep = !equalFold(v, "close")
		case equalFold(k, "x-flashsale-node"):
			r.Node = v
		}
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

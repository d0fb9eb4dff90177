package auth

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"time"
)

// WriteTokenPool writes n tokens (users prefix0..prefix(n-1)), one a line:
// the token-pool file of `flashsale token --pool` and the wrk scripts.
func WriteTokenPool(path string, secret []byte, prefix string, n int, ttl time.Duration) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("token pool: %w", err)
	}
	w := bufio.NewWriter(f)
	m := NewMinter(secret)
	exp := time.Now().Add(ttl).Unix()
	var buf []byte
	for i := range n {
		buf = append(m.Append(buf[:0], prefix+strconv.Itoa(i), exp), '\n')
		if _, err := w.Write(buf); err != nil {
			f.Close()
			return fmt.Errorf("token pool: %w", err)
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("token pool: %w", err)
	}
	return f.Close()
}

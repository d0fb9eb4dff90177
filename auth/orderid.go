package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"hash"
	"strconv"
	"sync"

	"github.com/flashsale/flashsale"
)

// OrderIDs spells the public id of an order, "<sale>.<seq>.<tag>": tag is
// the first 64 bits of HMAC-SHA256(key, "<sale>.<seq>") in lowercase hex.
// Sequence numbers are guessable (they count up); the tag is not, so an
// order id is a capability that only its buyer was given, and there is
// exactly one spelling of each ("<sale>.01", "<sale>.+1", an upper-case tag
// or a missing one are all no order). Inside the system (Redis, Kafka,
// stat.log, reconcile) orders keep their record id "<sale>.<seq>".
// It is safe for concurrent use.
type OrderIDs struct {
	pool sync.Pool // *orderMAC
}

// TagLen is the length of an order id's tag.
const TagLen = 16

type orderMAC struct {
	h   hash.Hash
	buf []byte
	sum [sha256.Size]byte
}

// NewOrderIDs returns the order id codec keyed by key. Every node of a
// cluster must use the same key (DeriveKey of the shared auth secret).
func NewOrderIDs(key []byte) *OrderIDs {
	k := append([]byte(nil), key...)
	o := &OrderIDs{}
	o.pool.New = func() any { return &orderMAC{h: hmac.New(sha256.New, k), buf: make([]byte, 0, 96)} }
	return o
}

// DeriveKey returns a key for one purpose derived from the cluster's auth
// secret, so one configured secret yields independent keys (a token MAC can
// never be replayed as an order tag).
func DeriveKey(secret []byte, purpose string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("flashsale/" + purpose + "/v1"))
	return m.Sum(nil)
}

// Append appends the public id of order seq of sale.
func (o *OrderIDs) Append(b []byte, sale string, seq int64) []byte {
	m := o.pool.Get().(*orderMAC)
	defer o.pool.Put(m)
	// The MAC reads m's own buffer, not b: b then stays on the caller's
	// stack (the hot path passes a stack array).
	m.buf = flashsale.AppendOrderID(m.buf[:0], sale, seq)
	b = append(b, m.buf...)
	m.h.Reset()
	m.h.Write(m.buf)
	sum := m.h.Sum(m.sum[:0])
	b = append(b, '.')
	return hex.AppendEncode(b, sum[:TagLen/2])
}

// Format returns the public id of order seq of sale.
func (o *OrderIDs) Format(sale string, seq int64) string {
	return string(o.Append(make([]byte, 0, len(sale)+21+1+TagLen), sale, seq))
}

// Parse returns the sale and sequence number of a public order id, and
// false for anything that is not exactly the id Append spells.
func (o *OrderIDs) Parse(id string) (sale string, seq int64, ok bool) {
	if len(id) < TagLen+4 || len(id) > flashsale.MaxIDLen+21+1+TagLen || id[len(id)-TagLen-1] != '.' {
		return "", 0, false
	}
	rec := id[:len(id)-TagLen-1]
	sale, seq, err := flashsale.ParseOrderID(rec)
	if err != nil || len(strconv.FormatInt(seq, 10)) != len(rec)-len(sale)-1 {
		return "", 0, false // "01", "+1": the number must be spelled the one way
	}
	m := o.pool.Get().(*orderMAC)
	defer o.pool.Put(m)
	m.buf = append(m.buf[:0], rec...)
	m.h.Reset()
	m.h.Write(m.buf)
	var tag [TagLen]byte
	hex.Encode(tag[:], m.h.Sum(m.sum[:0])[:TagLen/2])
	if subtle.ConstantTimeCompare(tag[:], []byte(id[len(id)-TagLen:])) != 1 {
		return "", 0, false
	}
	return sale, seq, true
}

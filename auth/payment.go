package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"
)

// SignatureHeader is the header the payment provider signs its callbacks in:
// "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>", the
// scheme Stripe uses for webhooks.
const SignatureHeader = "Flashsale-Signature"

// SignatureTolerance is how far t may be from the node's clock: a captured
// callback cannot be replayed after it (and within it, payment_id makes a
// replay a no-op).
const SignatureTolerance = 5 * time.Minute

// maxSignatureHeader bounds what ParseSignature reads; maxV1 bounds the
// candidate signatures tried (a provider rotating its secret sends two).
const (
	maxSignatureHeader = 1024
	maxV1              = 4
)

// Signature is a parsed Flashsale-Signature header.
type Signature struct {
	T    int64      // unix seconds the provider signed at
	TRaw string     // t as sent: what the MAC covers
	V1   [][32]byte // candidate v1 signatures
}

var errSignature = errors.New("malformed Flashsale-Signature header")

// ParseSignature parses "t=...,v1=...[,v1=...]". Other schemes' entries
// (e.g. v0) are ignored, as Stripe's clients do; t must appear exactly once
// as plain decimal digits, and each v1 as 64 hex digits.
func ParseSignature(h string) (Signature, error) {
	var s Signature
	if len(h) == 0 || len(h) > maxSignatureHeader {
		return s, errSignature
	}
	seenT := false
	for h != "" {
		var part string
		part, h, _ = strings.Cut(h, ",")
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return Signature{}, errSignature
		}
		switch k {
		case "t":
			if seenT || len(v) == 0 || len(v) > 12 || strings.TrimLeft(v, "0123456789") != "" {
				return Signature{}, errSignature
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return Signature{}, errSignature
			}
			s.T, s.TRaw, seenT = n, v, true
		case "v1":
			var sig [32]byte
			if len(v) != 64 || len(s.V1) == maxV1 {
				return Signature{}, errSignature
			}
			if _, err := hex.Decode(sig[:], []byte(v)); err != nil {
				return Signature{}, errSignature
			}
			s.V1 = append(s.V1, sig)
		}
	}
	if !seenT || len(s.V1) == 0 {
		return Signature{}, errSignature
	}
	return s, nil
}

// SignPayload returns the Flashsale-Signature value for body signed at t.
func SignPayload(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(payloadMAC(secret, ts, body))
}

func payloadMAC(secret []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// VerifyPayload checks a callback's Flashsale-Signature header against its
// raw body: a v1 that matches and a t within SignatureTolerance of now.
func VerifyPayload(secret []byte, header string, body []byte, now time.Time) error {
	s, err := ParseSignature(header)
	if err != nil {
		return err
	}
	if d := now.Unix() - s.T; d > int64(SignatureTolerance/time.Second) || d < -int64(SignatureTolerance/time.Second) {
		return errors.New("signature timestamp outside the tolerance")
	}
	want := payloadMAC(secret, s.TRaw, body)
	for _, v := range s.V1 {
		if hmac.Equal(want, v[:]) {
			return nil
		}
	}
	return errors.New("no v1 signature matches")
}

// Package auth is who a request speaks for: buyer tokens (JWT, HS256 with
// the cluster's shared secret, or EdDSA from a login service's key), the
// payment provider's signed callbacks, and the tools that mint both for
// tests, benches and the dev cluster.
//
// Verification runs on every per-person request, the sold-out answer
// included, so it has a fast path for the one shape of token the cluster
// issues (see fast.go); everything else goes through github.com/golang-jwt/jwt/v5,
// and the two are fuzzed against each other.
package auth

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/golang-jwt/jwt/v5"
)

// MinSecretLen is the shortest HS256 key a node accepts: a shorter key can
// be brute-forced offline from any one token.
const MinSecretLen = 32

// MaxTokenLen caps what is parsed at all: a real token is a few hundred bytes.
const MaxTokenLen = 2048

// ErrUnauthorized is every token failure. One value, one pre-rendered body:
// a client learns only that the token was not good, never which check failed.
var ErrUnauthorized = &flashsale.Error{Code: flashsale.EUNAUTHORIZED, Message: "a valid bearer token is required"}

// Verifier checks buyer tokens. It is safe for concurrent use.
type Verifier struct {
	key  []byte
	pub  ed25519.PublicKey // nil: EdDSA tokens are refused
	lib  *jwt.Parser
	now  func() time.Time
	macs sync.Pool // *fastMAC keyed with key
}

// NewVerifier returns a Verifier of HS256 tokens signed with secret (at
// least MinSecretLen bytes) and, when pub is not nil, of EdDSA tokens signed
// by pub's private key.
func NewVerifier(secret []byte, pub ed25519.PublicKey) (*Verifier, error) {
	return newVerifier(secret, pub, time.Now)
}

func newVerifier(secret []byte, pub ed25519.PublicKey, now func() time.Time) (*Verifier, error) {
	if len(secret) < MinSecretLen {
		return nil, fmt.Errorf("auth secret is %d bytes; at least %d are required (set FLASHSALE_AUTH_SECRET)", len(secret), MinSecretLen)
	}
	methods := []string{jwt.SigningMethodHS256.Alg()}
	if pub != nil {
		methods = append(methods, jwt.SigningMethodEdDSA.Alg())
	}
	v := &Verifier{key: append([]byte(nil), secret...), pub: pub, now: now}
	v.lib = jwt.NewParser(jwt.WithValidMethods(methods), jwt.WithExpirationRequired(), jwt.WithIssuedAt(),
		jwt.WithTimeFunc(now))
	v.macs.New = func() any { return newFastMAC(v.key) }
	return v, nil
}

// Verify returns the subject (the user id) of a valid token: signed with an
// accepted algorithm, not expired (exp is required), not before nbf or iat,
// with a sub that is a valid user id. Any failure is ErrUnauthorized.
func (v *Verifier) Verify(token string) (string, error) {
	if len(token) > MaxTokenLen {
		return "", ErrUnauthorized
	}
	switch sub, res := v.fast(token); res {
	case fastOK:
		return sub, nil
	case fastBad:
		return "", ErrUnauthorized
	}
	return v.library(token)
}

// library verifies with golang-jwt: every token shape the fast path leaves.
func (v *Verifier) library(token string) (string, error) {
	var claims jwt.RegisteredClaims
	_, err := v.lib.ParseWithClaims(token, &claims, func(t *jwt.Token) (any, error) {
		switch t.Method.Alg() {
		case jwt.SigningMethodHS256.Alg():
			return v.key, nil
		case jwt.SigningMethodEdDSA.Alg():
			if v.pub != nil {
				return v.pub, nil
			}
		}
		return nil, errors.New("algorithm not accepted")
	})
	if err != nil || !flashsale.ValidID(claims.Subject) {
		return "", ErrUnauthorized
	}
	return claims.Subject, nil
}

// BearerToken returns the token of an "Authorization: Bearer <token>"
// header value, and false when the header has another shape.
func BearerToken(h string) (string, bool) {
	const prefix = "Bearer "
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return "", false
	}
	return h[len(prefix):], true
}

// Mint returns an HS256 token for sub that expires after ttl, with iat now:
// what `flashsale token` prints and what the tests and tools send.
func Mint(secret []byte, sub string, ttl time.Duration) (string, error) {
	if !flashsale.ValidID(sub) {
		return "", fmt.Errorf("user id %q must be 1-64 characters of [A-Za-z0-9_-:@]", sub)
	}
	now := time.Now()
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Subject: sub, IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(ttl))})
	s, err := t.SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("sign token for %q: %w", sub, err)
	}
	return s, nil
}

// LoadPublicKey reads an Ed25519 public key in PEM (PKIX, "PUBLIC KEY").
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read auth public key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("auth public key %s: no PEM block", path)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("auth public key %s: %w", path, err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("auth public key %s: %T is not an Ed25519 key", path, k)
	}
	return pub, nil
}

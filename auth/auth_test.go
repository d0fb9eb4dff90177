package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/golang-jwt/jwt/v5"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

func sign(t testing.TB, m jwt.SigningMethod, key any, claims jwt.Claims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestShortSecretRefused(t *testing.T) {
	if _, err := NewVerifier(testKey[:31], nil); err == nil {
		t.Fatal("a 31-byte secret was accepted")
	}
}

// Every way a token can be wrong is refused, by the fast path and the
// library alike; the good ones carry their subject.
func TestVerify(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	v, err := NewVerifier(testKey, pub)
	if err != nil {
		t.Fatal(err)
	}
	hsOnly, _ := NewVerifier(testKey, nil)
	now := time.Now()
	exp := jwt.NewNumericDate(now.Add(time.Hour))
	good := jwt.RegisteredClaims{Subject: "alice", ExpiresAt: exp}
	minted, _ := Mint(testKey, "bob", time.Minute)
	fast := string(NewMinter(testKey).Append(nil, "carol", now.Add(time.Hour).Unix()))
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." +
		base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"alice","exp":9999999999}`)) + "."
	otherKey := []byte("ffffffffffffffffffffffffffffffff")
	cases := []struct {
		name, token, sub string
		v                *Verifier
	}{
		{"hs256", sign(t, jwt.SigningMethodHS256, testKey, good), "alice", v},
		{"minted", minted, "bob", v},
		{"fast minter", fast, "carol", v},
		{"eddsa", sign(t, jwt.SigningMethodEdDSA, priv, good), "alice", v},
		{"eddsa without a key", sign(t, jwt.SigningMethodEdDSA, priv, good), "", hsOnly},
		{"alg none", none, "", v},
		{"hs384", sign(t, jwt.SigningMethodHS384, testKey, good), "", v},
		{"hs512", sign(t, jwt.SigningMethodHS512, testKey, good), "", v},
		{"wrong key", sign(t, jwt.SigningMethodHS256, otherKey, good), "", v},
		{"no exp", sign(t, jwt.SigningMethodHS256, testKey, jwt.RegisteredClaims{Subject: "alice"}), "", v},
		{"expired", sign(t, jwt.SigningMethodHS256, testKey, jwt.RegisteredClaims{Subject: "alice",
			ExpiresAt: jwt.NewNumericDate(now.Add(-time.Second))}), "", v},
		{"not yet", sign(t, jwt.SigningMethodHS256, testKey, jwt.RegisteredClaims{Subject: "alice", ExpiresAt: exp,
			NotBefore: jwt.NewNumericDate(now.Add(time.Minute))}), "", v},
		{"issued in the future", sign(t, jwt.SigningMethodHS256, testKey, jwt.RegisteredClaims{Subject: "alice", ExpiresAt: exp,
			IssuedAt: jwt.NewNumericDate(now.Add(time.Minute))}), "", v},
		{"no sub", sign(t, jwt.SigningMethodHS256, testKey, jwt.RegisteredClaims{ExpiresAt: exp}), "", v},
		{"bad sub", sign(t, jwt.SigningMethodHS256, testKey, jwt.RegisteredClaims{Subject: "a b", ExpiresAt: exp}), "", v},
		{"long sub", sign(t, jwt.SigningMethodHS256, testKey, jwt.RegisteredClaims{Subject: strings.Repeat("a", 65), ExpiresAt: exp}), "", v},
		{"empty", "", "", v},
		{"garbage", "a.b.c", "", v},
		{"huge", strings.Repeat("a", MaxTokenLen+1), "", v},
		{"tampered payload", tamper(minted), "", v},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sub, err := c.v.Verify(c.token)
			if c.sub == "" {
				if err != ErrUnauthorized {
					t.Fatalf("accepted as %q (err %v)", sub, err)
				}
				return
			}
			if err != nil || sub != c.sub {
				t.Fatalf("got %q, %v; want %q", sub, err, c.sub)
			}
		})
	}
}

// tamper swaps the payload of token for one naming mallory.
func tamper(token string) string {
	p := strings.Split(token, ".")
	p[1] = base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"mallory","exp":9999999999}`))
	return strings.Join(p, ".")
}

// The cluster's own tokens take the fast path, and it allocates only the
// subject string.
func TestFastPathTaken(t *testing.T) {
	v, _ := NewVerifier(testKey, nil)
	tok, _ := Mint(testKey, "u1", time.Hour)
	if _, res := v.fast(tok); res != fastOK {
		t.Fatalf("a minted token fell back (%d)", res)
	}
	if testenv.RaceEnabled {
		return // the race detector allocates on its own
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = v.Verify(tok) }); n > 1 {
		t.Fatalf("fast path allocates %.0f times", n)
	}
}

func TestLoadPublicKey(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(pub)
	p := filepath.Join(t.TempDir(), "pub.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := LoadPublicKey(p)
	if err != nil || !got.Equal(pub) {
		t.Fatalf("got %v, %v", got, err)
	}
}

// FuzzVerify: whatever the fast path decides, the library decides the same
// (the fast path may only defer). Seeds cover both paths.
func FuzzVerify(f *testing.F) {
	fixed := time.Unix(1_800_000_000, 0)
	v, _ := newVerifier(testKey, nil, func() time.Time { return fixed })
	for _, claims := range []string{
		`{"sub":"u1","exp":1800000001}`, `{"sub":"u1","exp":1800000000}`, `{"exp":1800000001,"sub":"u1","iat":1799999999,"nbf":1800000000}`,
		`{"sub":"u1","exp":1800000001,"Sub":"u2"}`, `{"sub":"u1","sub":"u2","exp":1800000001}`, `{"sub":"u\u0031","exp":1800000001}`,
		`{"sub":"u1","exp":1800000001.5}`, `{"sub":"u1","exp":"1800000001"}`, `{"sub":"u1","exp":01800000001}`, `{ "sub" : "u1" , "exp" : 1800000001 } `,
		`{"sub":"u1","exp":1800000001,"aud":["x"]}`, `{"sub":"u1","exp":1800000001,"iss":"login","jti":"7"}`, `{}`, `[]`, `{"sub":"u1","exp":1e10}`,
	} {
		for _, h := range append(fastHeaders[:], b64(`{"alg":"HS256","kid":"1"}`), b64(`{"alg":"HS384"}`), b64(`{"alg":"none"}`)) {
			f.Add(h, b64(claims), true)
		}
	}
	f.Add("x", "y", false)
	f.Fuzz(func(t *testing.T, header, payload string, signIt bool) {
		signed := header + "." + payload
		var tok string
		if signIt {
			m := newFastMAC(testKey)
			m.h.Write([]byte(signed))
			tok = signed + "." + base64.RawURLEncoding.EncodeToString(m.h.Sum(nil))
		} else {
			tok = signed + ".AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
		}
		sub, res := v.fast(tok)
		if res == fastFallback {
			return
		}
		lsub, lerr := v.library(tok)
		if (res == fastOK) != (lerr == nil) || sub != lsub {
			t.Fatalf("fast %d %q, library %q %v for %q", res, sub, lsub, lerr, tok)
		}
	})
}

func BenchmarkVerifyFast(b *testing.B) {
	v, _ := NewVerifier(testKey, nil)
	tok, _ := Mint(testKey, "u12345", time.Hour)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyLibrary(b *testing.B) {
	v, _ := NewVerifier(testKey, nil)
	tok, _ := Mint(testKey, "u12345", time.Hour)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.library(tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMint(b *testing.B) {
	m := NewMinter(testKey)
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = m.Append(buf[:0], "u12345", 1_800_000_000)
	}
}

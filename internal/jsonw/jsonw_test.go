package jsonw

import (
	"encoding/json"
	"testing"
)

func FuzzString(f *testing.F) {
	for _, s := range []string{"", "plain", `q"uote`, "back\\slash", "nl\n\t\r", "\x00\x1f", "é中", "\xff\xfe"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := String(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("String(%q) = %s: not JSON: %v", s, b, err)
		}
		want, _ := json.Marshal(s)
		var w string
		_ = json.Unmarshal(want, &w)
		if got != w {
			t.Fatalf("String(%q) decodes to %q, encoding/json gives %q", s, got, w)
		}
	})
}

func TestObject(t *testing.T) {
	b := append([]byte(nil), '{')
	b = StrField(b, "a", "x")
	b = IntField(b, "n", -42)
	b = append(b, '}')
	var v struct {
		A string
		N int64
	}
	if err := json.Unmarshal(b, &v); err != nil || v.A != "x" || v.N != -42 {
		t.Fatalf("%s -> %+v, %v", b, v, err)
	}
}

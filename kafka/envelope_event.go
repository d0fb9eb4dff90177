package kafka

import (
	"encoding/json"
	"fmt"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/internal/jsonw"
)

// EnvelopeEvent types on the envelope topic (envelope.topic in the config, separate
// from the order topic so neither consumer reads the other's traffic).
// Every event is keyed by envelope id, so one envelope's events keep their
// order within a partition.
const (
	TypeEnvelopeCreated  = "envelope.created"  // drives the refund at expires_at_ms
	TypeEnvelopeOpened   = "envelope.opened"   // one per open; published before the opener hears the amount
	TypeEnvelopeRefunded = "envelope.refunded" // once per envelope (at least once, deduplicated by a flag in Redis)
)

// EnvelopeEvent is an envelope event.
type EnvelopeEvent struct {
	Type        string `json:"type"`
	EnvelopeID  string `json:"envelope_id"`
	SenderID    string `json:"sender_id,omitempty"`
	UserID      string `json:"user_id,omitempty"`
	Node        string `json:"node,omitempty"`
	TotalCents  int64  `json:"total_cents,omitempty"`
	Count       int64  `json:"count,omitempty"`
	AmountCents int64  `json:"amount_cents,omitempty"`
	Seq         int64  `json:"seq,omitempty"`
	AtMs        int64  `json:"at_ms"`
	ExpiresAtMs int64  `json:"expires_at_ms,omitempty"`
}

// AppendEnvelopeEvent appends e as JSON without reflection (the open path sends one
// per opener).
func AppendEnvelopeEvent(b []byte, e *EnvelopeEvent) []byte {
	b = append(b, '{')
	b = jsonw.StrField(b, "type", e.Type)
	b = jsonw.StrField(b, "envelope_id", e.EnvelopeID)
	if e.SenderID != "" {
		b = jsonw.StrField(b, "sender_id", e.SenderID)
	}
	if e.UserID != "" {
		b = jsonw.StrField(b, "user_id", e.UserID)
	}
	if e.Node != "" {
		b = jsonw.StrField(b, "node", e.Node)
	}
	for _, f := range []struct {
		k string
		v int64
	}{{"total_cents", e.TotalCents}, {"count", e.Count}, {"amount_cents", e.AmountCents}, {"seq", e.Seq}} {
		if f.v != 0 {
			b = jsonw.IntField(b, f.k, f.v)
		}
	}
	b = jsonw.IntField(b, "at_ms", e.AtMs)
	if e.ExpiresAtMs != 0 {
		b = jsonw.IntField(b, "expires_at_ms", e.ExpiresAtMs)
	}
	return append(b, '}')
}

// ParseEnvelopeEvent decodes an envelope event and checks what consumers rely on.
func ParseEnvelopeEvent(b []byte) (EnvelopeEvent, error) {
	var e EnvelopeEvent
	if err := json.Unmarshal(b, &e); err != nil {
		return EnvelopeEvent{}, fmt.Errorf("envelope event: %w", err)
	}
	if e.Type == "" || !flashsale.ValidID(e.EnvelopeID) {
		return EnvelopeEvent{}, fmt.Errorf("envelope event: no type or bad envelope id %q", e.EnvelopeID)
	}
	if e.Type == TypeEnvelopeCreated && e.ExpiresAtMs <= 0 {
		return EnvelopeEvent{}, fmt.Errorf("envelope event: created without expires_at_ms")
	}
	return e, nil
}

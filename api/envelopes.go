package api

import (
	"net/http"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/internal/jsonw"
	"github.com/flashsale/flashsale/shake"
	"github.com/flashsale/flashsale/statlog"
	"github.com/flashsale/flashsale/wallet"
	"github.com/gin-gonic/gin"
)

// registerEnvelopes adds the red-envelope, wallet and shake routes to v1.
func (s *Server) registerEnvelopes(v1 *gin.RouterGroup) {
	if s.Envelopes != nil {
		v1.POST("/envelopes", s.observe("send_envelope"), s.identify, s.sendEnvelope)
		v1.GET("/envelopes/:id", s.observe("get_envelope"), s.getEnvelope)
		v1.POST("/envelopes/:id/open", s.observe("open"), s.limitIP, s.identify, s.limitUser, s.openEnvelope)
		v1.GET("/users/:id/wallet", s.observe("get_wallet"), s.identify, s.getWallet)
		v1.POST("/users/:id/wallet/credit", s.observe("credit"), s.admin, s.credit)
	}
	if s.Shakes != nil {
		v1.POST("/shakes", s.observe("create_shake"), s.admin, s.createShake)
		v1.GET("/shakes/:id", s.observe("get_shake"), s.getShake)
		sh := []gin.HandlerFunc{s.observe("shake"), s.limitIP, s.identify, s.limitUser, s.shake}
		v1.POST("/shakes/:id/shake", sh...)
		v1.GET("/shakes/:id/shake", sh...)
	}
}

func (s *Server) sendEnvelope(c *gin.Context) {
	body, err := readBody(c)
	if err != nil {
		s.writeError(c, err)
		return
	}
	req, err := ParseCreateEnvelope(body, s.cfg.Envelope, subject(c))
	if err != nil {
		s.writeError(c, err)
		return
	}
	e, err := s.Envelopes.Create(c.Request.Context(), req)
	if err != nil {
		s.writeError(c, err)
		return
	}
	var buf [256]byte
	b := append(buf[:0], '{')
	b = jsonw.StrField(b, "envelope_id", e.ID)
	b = jsonw.StrField(b, "sender_id", e.SenderID)
	b = jsonw.IntField(b, "total_cents", e.TotalCents)
	b = jsonw.IntField(b, "count", int64(e.Count))
	b = jsonw.Field(b, "expires_at")
	b = append(b, '"')
	b = e.ExpiresAt.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"', '}')
	writeJSON(c, http.StatusCreated, b)
}

// openEnvelope is a hot path: validate, open, log the outcome, answer.
func (s *Server) openEnvelope(c *gin.Context) {
	start := time.Now()
	id := c.Param("id")
	user := subject(c)
	err := s.namedUser(c)
	if err == nil && !flashsale.ValidID(id) {
		err = fieldErr("envelope id")
	}
	if err != nil {
		// Bad input changes nothing and is not an open outcome: no stat.log line.
		setResult(c, flashsale.ErrorCode(err))
		s.writeError(c, err)
		return
	}
	o, err := s.Envelopes.Open(c.Request.Context(), id, user)
	rec := statlog.Record{Time: start, Node: s.cfg.NodeID, Kind: "open", Sale: id, User: user, Result: "ok", Amount: o.AmountCents}
	if err != nil {
		rec.Result, rec.Amount = flashsale.ErrorCode(err), 0
	}
	s.logOutcome(c, &rec, start)
	if err != nil {
		s.writeError(c, err)
		return
	}
	var buf [192]byte
	b := append(buf[:0], '{')
	b = jsonw.StrField(b, "envelope_id", id)
	b = jsonw.StrField(b, "user_id", user)
	b = jsonw.IntField(b, "amount_cents", o.AmountCents)
	b = append(b, '}')
	writeJSON(c, http.StatusOK, b)
}

func (s *Server) getEnvelope(c *gin.Context) {
	id := c.Param("id")
	if !flashsale.ValidID(id) {
		s.writeError(c, fieldErr("envelope id"))
		return
	}
	b, err := s.Envelopes.Get(c.Request.Context(), id)
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, b)
}

// getWallet shows a wallet to its owner only.
func (s *Server) getWallet(c *gin.Context) {
	id := c.Param("id")
	if !flashsale.ValidID(id) {
		s.writeError(c, fieldErr("user id"))
		return
	}
	if id != subject(c) {
		s.writeError(c, errForbidden)
		return
	}
	w, err := wallet.Get(c.Request.Context(), s.Redis, id, s.cfg.WalletRecent)
	if err != nil {
		s.writeError(c, flashsale.Errorf(flashsale.EUNAVAILABLE, "wallet unavailable; retry shortly"))
		s.log.Warn("read wallet", "user", id, "err", err)
		return
	}
	c.JSON(http.StatusOK, w)
}

func (s *Server) createShake(c *gin.Context) {
	body, err := readBody(c)
	if err != nil {
		s.writeError(c, err)
		return
	}
	camp, err := ParseCreateShake(body, s.cfg.Shake)
	if err != nil {
		s.writeError(c, err)
		return
	}
	camp, err = s.Shakes.Create(c.Request.Context(), camp)
	if err != nil {
		s.writeError(c, err)
		return
	}
	s.log.Info("shake campaign created", "campaign", camp.ID, "total", camp.Total, "rate", camp.RatePerSec, "mode", camp.Mode)
	c.JSON(http.StatusCreated, gin.H{"id": camp.ID, "total_envelopes": camp.Total, "rate_per_sec": camp.RatePerSec,
		"mode": camp.Mode, "budget_cents": camp.BudgetCents, "min_cents": camp.MinCents, "max_cents": camp.MaxCents,
		"max_wins_per_user": camp.MaxWinsPerUser, "starts_at": camp.StartsAt})
}

func (s *Server) getShake(c *gin.Context) {
	id := c.Param("id")
	if !flashsale.ValidID(id) {
		s.writeError(c, fieldErr("campaign id"))
		return
	}
	b, err := shake.Books(c.Request.Context(), s.Redis, id)
	if err != nil {
		s.writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, b)
}

var lostBody = []byte(`{"won":false}`)

// shake is the hottest path: nearly every call loses, from memory.
func (s *Server) shake(c *gin.Context) {
	start := time.Now()
	id := c.Param("id")
	user := subject(c)
	err := s.namedUser(c)
	if err == nil && !flashsale.ValidID(id) {
		err = fieldErr("campaign id")
	}
	if err != nil {
		setResult(c, flashsale.ErrorCode(err))
		s.writeError(c, err)
		return
	}
	w, err := s.Shakes.Shake(c.Request.Context(), id, user)
	rec := statlog.Record{Time: start, Node: s.cfg.NodeID, Kind: "shake", Sale: id, User: user, Result: "lost"}
	switch {
	case err != nil:
		rec.Result = flashsale.ErrorCode(err)
	case w.Won:
		rec.Result, rec.Amount, rec.Order = "ok", w.AmountCents, w.EnvelopeID
	}
	s.logOutcome(c, &rec, start)
	if err != nil {
		s.writeError(c, err)
		return
	}
	if !w.Won {
		writeJSON(c, http.StatusOK, lostBody)
		return
	}
	var buf [192]byte
	b := append(buf[:0], `{"won":true`...)
	b = jsonw.IntField(b, "amount_cents", w.AmountCents)
	b = jsonw.StrField(b, "envelope_id", w.EnvelopeID)
	b = append(b, '}')
	writeJSON(c, http.StatusOK, b)
}

// logOutcome writes one stat.log line and leaves the result for observe.
func (s *Server) logOutcome(c *gin.Context, rec *statlog.Record, start time.Time) {
	s.writeStat(rec, start)
	setResult(c, rec.Result)
}

// writeStat stamps rec with the time since start and writes it to the
// stat.log, if the node keeps one.
func (s *Server) writeStat(rec *statlog.Record, start time.Time) {
	rec.LatencyUs = time.Since(start).Microseconds()
	if s.StatLog != nil {
		s.StatLog.Write(rec)
	}
}

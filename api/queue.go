package api

import (
	"net/http"

	"github.com/flashsale/flashsale"
	"github.com/gin-gonic/gin"
)

// QueueTicketHeader carries a waiting-room ticket on GET /v1/sales/{id}/queue
// and on buys of a sale with a waiting room.
const QueueTicketHeader = "X-Queue-Ticket"

// buyer is the identity a queue ticket is bound to: today the user_id query
// parameter, as on GET buy; with signed buyer tokens it becomes the token's
// subject, here and nowhere else.
func (s *Server) buyer(c *gin.Context) (string, error) { return queryUser(c.Request.URL.RawQuery) }

// joinQueue is POST /v1/sales/{id}/queue?user_id=U: a signed ticket, the
// buyer's place and the estimated wait.
func (s *Server) joinQueue(c *gin.Context) {
	saleID := c.Param("id")
	user, err := s.buyer(c)
	if err == nil && !flashsale.ValidID(saleID) {
		err = fieldErr("sale id")
	}
	if err != nil {
		s.writeError(c, err)
		return
	}
	v, err := s.Rooms.Join(c.Request.Context(), saleID, user)
	if err != nil {
		c.Set(resultKey, flashsale.ErrorCode(err))
		s.writeError(c, err)
		return
	}
	c.JSON(http.StatusCreated, v)
}

// queueStatus is GET /v1/sales/{id}/queue?user_id=U with the ticket in
// X-Queue-Ticket: the state from what the node already knows (no Redis),
// cacheable by the client for a second.
func (s *Server) queueStatus(c *gin.Context) {
	saleID := c.Param("id")
	user, err := s.buyer(c)
	if err == nil && !flashsale.ValidID(saleID) {
		err = fieldErr("sale id")
	}
	if err != nil {
		s.writeError(c, err)
		return
	}
	v, err := s.Rooms.Status(c.Request.Context(), saleID, user, c.GetHeader(QueueTicketHeader))
	if err != nil {
		c.Set(resultKey, flashsale.ErrorCode(err))
		s.writeError(c, err)
		return
	}
	c.Header("Cache-Control", "private, max-age=1")
	c.JSON(http.StatusOK, v)
}

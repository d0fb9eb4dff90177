package api

import (
	"net/http"

	"github.com/flashsale/flashsale"
	"github.com/gin-gonic/gin"
)

// QueueTicketHeader carries a waiting-room ticket on GET /v1/sales/{id}/queue
// and on buys of a sale with a waiting room.
const QueueTicketHeader = "X-Queue-Ticket"

// buyer is the identity a queue ticket (and GET /v1/users/me/orders) is
// bound to: the bearer token's subject (identify runs before). A user_id
// the query still names must be the token's, as on buy: another is 403.
func (s *Server) buyer(c *gin.Context) (string, error) {
	named, err := queryUser(c.Request.URL.RawQuery)
	if err != nil {
		return "", err
	}
	if err := sameUser(c, named); err != nil {
		return "", err
	}
	return subject(c), nil
}

// joinQueue is POST /v1/sales/{id}/queue with a bearer token: a signed
// ticket bound to the token's subject, the buyer's place and the
// estimated wait.
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
		setResult(c, flashsale.ErrorCode(err))
		s.writeError(c, err)
		return
	}
	c.JSON(http.StatusCreated, v)
}

// queueStatus is GET /v1/sales/{id}/queue with a bearer token and the
// ticket in X-Queue-Ticket: the state from what the node already knows (no Redis),
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
		setResult(c, flashsale.ErrorCode(err))
		s.writeError(c, err)
		return
	}
	c.Header("Cache-Control", "private, max-age=1")
	c.JSON(http.StatusOK, v)
}

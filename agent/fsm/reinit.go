package fsm

import "slices"

// MaxReinitLog is how many finished reinit requests the state keeps.
const MaxReinitLog = 20

// Reinit outcomes, as recorded in the state's ReinitLog.
const (
	ReinitDone      = "done"
	ReinitCancelled = "cancelled"
)

// ReinitRequest is an operator's request that a standby set its PostgreSQL
// data aside and clone it afresh from the primary. It stays in the state
// until the node reports it carried it out, so an agent that restarts in
// the middle of a re-clone starts it again rather than forget it.
type ReinitRequest struct {
	Node string `json:"node"`
	// ID names the request (chosen by the agent that took it); the CLI
	// waits for the record with this ID.
	ID          string `json:"id"`
	RequestedBy string `json:"requested_by,omitempty"`
	Reason      string `json:"reason,omitempty"`
	// Index and Epoch: the log position and epoch of the request.
	Index uint64 `json:"index"`
	Epoch uint64 `json:"epoch"`
}

// ReinitRecord is a finished reinit request.
type ReinitRecord struct {
	ReinitRequest
	Outcome string `json:"outcome"`
	Detail  string `json:"detail,omitempty"`
	// From is the primary the node cloned from (empty when cancelled).
	From      string `json:"from,omitempty"`
	DoneIndex uint64 `json:"done_index"`
}

// Reinit requests a re-clone of a standby (Done false), or records that the
// request ID was carried out or given up (Done true). The primary cannot be
// re-initialized: it holds the data the others clone.
type Reinit struct {
	Node        string `json:"node"`
	ID          string `json:"id"`
	RequestedBy string `json:"requested_by,omitempty"`
	Reason      string `json:"reason,omitempty"`

	Done    bool   `json:"done,omitempty"`
	Outcome string `json:"outcome,omitempty"`
	Detail  string `json:"detail,omitempty"`
	From    string `json:"from,omitempty"`
}

func (*Reinit) MessageType() MessageType { return ReinitType }

func (c *Reinit) apply(s *State, a applyCtx) error {
	if c.Node == "" || c.ID == "" {
		return reject(ReinitType, "reinit needs a node and a request id")
	}
	if c.Done {
		req, ok := s.Reinit[c.Node]
		if !ok || req.ID != c.ID {
			return reject(ReinitType, "no reinit request %s pending for %q", c.ID, c.Node)
		}
		outcome := c.Outcome
		if outcome == "" {
			outcome = ReinitDone
		}
		finishReinit(s, req, ReinitRecord{Outcome: outcome, Detail: c.Detail, From: c.From, DoneIndex: a.index})
		return nil
	}
	m := s.Member(c.Node)
	switch {
	case m == nil:
		return reject(ReinitType, "%q is not a member", c.Node)
	case m.NoPostgres:
		return reject(ReinitType, "%q runs no PostgreSQL (a witness)", c.Node)
	case s.Epoch == 0:
		return reject(ReinitType, "cluster not bootstrapped")
	case c.Node == s.Primary:
		return reject(ReinitType, "%q is the primary of epoch %d: switch over first, then reinit it as a standby", c.Node, s.Epoch)
	}
	if req, ok := s.Reinit[c.Node]; ok {
		return reject(ReinitType, "a reinit of %q is already pending (request %s)", c.Node, req.ID)
	}
	if s.Reinit == nil {
		s.Reinit = map[string]ReinitRequest{}
	}
	s.Reinit[c.Node] = ReinitRequest{
		Node: c.Node, ID: c.ID, RequestedBy: c.RequestedBy, Reason: c.Reason,
		Index: a.index, Epoch: s.Epoch,
	}
	return nil
}

// finishReinit moves a pending request to the log.
func finishReinit(s *State, req ReinitRequest, rec ReinitRecord) {
	rec.ReinitRequest = req
	delete(s.Reinit, req.Node)
	if len(s.Reinit) == 0 {
		s.Reinit = nil
	}
	s.ReinitLog = append(s.ReinitLog, rec)
	if len(s.ReinitLog) > MaxReinitLog {
		s.ReinitLog = slices.Clone(s.ReinitLog[len(s.ReinitLog)-MaxReinitLog:])
	}
}

// cancelReinitOf drops a pending reinit of a node that has just become
// primary: its data is now the cluster's, never to be set aside.
func cancelReinitOf(s *State, node string, index uint64) {
	req, ok := s.Reinit[node]
	if !ok {
		return
	}
	finishReinit(s, req, ReinitRecord{Outcome: ReinitCancelled, Detail: "the node became the primary", DoneIndex: index})
}

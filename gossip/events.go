package gossip

import (
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/serf/serf"
)

// EventType says what happened to a member.
type EventType int

const (
	// EventJoin: a node is new to us, or back after Failed or Left.
	EventJoin EventType = iota + 1
	// EventSuspect: a node stopped answering our pings (or memberlist
	// declared it dead and our own check has not confirmed that yet).
	EventSuspect
	// EventAlive: a suspect node answered again; the suspicion is refuted.
	EventAlive
	// EventFailed: memberlist declared the node dead and our independent
	// check confirmed it.
	EventFailed
	// EventLeave: the node left gracefully, or was force-left.
	EventLeave
	// EventUpdate: the node's tags changed.
	EventUpdate
)

var eventNames = map[EventType]string{
	EventJoin:    "join",
	EventSuspect: "suspect",
	EventAlive:   "alive",
	EventFailed:  "failed",
	EventLeave:   "leave",
	EventUpdate:  "update",
}

func (t EventType) String() string {
	if s, ok := eventNames[t]; ok {
		return s
	}
	return "unknown(" + strconv.Itoa(int(t)) + ")"
}

// MarshalText makes events readable in JSON.
func (t EventType) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText parses the names String returns.
func (t *EventType) UnmarshalText(b []byte) error {
	for k, v := range eventNames {
		if v == string(b) {
			*t = k
			return nil
		}
	}
	return fmt.Errorf("unknown gossip event type %q", b)
}

// Event is one change in membership as this node sees it.
type Event struct {
	Type   EventType `json:"type"`
	Node   string    `json:"node"`
	Member Member    `json:"member"`
	// At is when this node observed the change. It carries Go's monotonic
	// reading, so time.Since(At) is immune to wall-clock steps.
	At time.Time `json:"at"`
}

// Status is a member's state as this node sees it.
type Status string

const (
	StatusAlive   Status = "alive"
	StatusSuspect Status = "suspect"
	StatusFailed  Status = "failed"
	StatusLeaving Status = "leaving"
	StatusLeft    Status = "left"
)

// Member is one node of the cluster.
type Member struct {
	Name   string            `json:"name"`
	Addr   string            `json:"addr"`
	Port   uint16            `json:"port"`
	Status Status            `json:"status"`
	Tags   map[string]string `json:"tags"`
}

// Address is host:port of the member's gossip listener.
func (m Member) Address() string {
	return net.JoinHostPort(m.Addr, strconv.Itoa(int(m.Port)))
}

// Role is the member's TagRole, or RoleUnknown.
func (m Member) Role() string {
	if r := m.Tags[TagRole]; r != "" {
		return r
	}
	return RoleUnknown
}

func (m Member) String() string {
	b, _ := json.Marshal(m)
	return string(b)
}

func memberFromSerf(sm serf.Member, status Status) Member {
	tags := make(map[string]string, len(sm.Tags))
	for k, v := range sm.Tags {
		tags[k] = v
	}
	addr := ""
	if sm.Addr != nil {
		addr = sm.Addr.String()
	}
	return Member{Name: sm.Name, Addr: addr, Port: sm.Port, Status: status, Tags: tags}
}

func serfStatus(s serf.MemberStatus) Status {
	switch s {
	case serf.StatusAlive:
		return StatusAlive
	case serf.StatusLeaving:
		return StatusLeaving
	case serf.StatusLeft:
		return StatusLeft
	case serf.StatusFailed:
		return StatusFailed
	}
	return StatusFailed
}

package gossip

import (
	"bytes"
	"fmt"
	"maps"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/memberlist"
)

// Tag keys. Values are short strings; the whole encoded set must fit in
// memberlist's MaxTagBytes.
const (
	TagRole     = "role"      // RolePrimary, RoleReplica, RoleWitness, RoleUnknown
	TagPG       = "pg"        // PostgreSQL state: PGRunning, PGStopped, ...
	TagGateway  = "gw"        // gateway address host:port
	TagAPI      = "api"       // HTTP API address host:port
	TagRaft     = "raft"      // raft suffrage: RaftVoter, RaftNonvoter, RaftNone
	TagRaftAddr = "raft_addr" // raft transport address host:port
	TagBuild    = "build"     // pgbattery version
	TagLSN      = "lsn"       // coarse WAL high-water mark: hex MiB (LSN >> 20)
	TagCluster  = "cluster"   // cluster id: nodes of another cluster are refused by the agent
	TagDC       = "dc"        // data centre / zone, free text
)

// Values of TagRole.
const (
	RolePrimary = "primary"
	RoleReplica = "replica"
	RoleWitness = "witness"
	RoleUnknown = "unknown"
)

// Values of TagRaft.
const (
	RaftVoter    = "voter"
	RaftNonvoter = "nonvoter"
	RaftNone     = "none"
)

// Values of TagPG.
const (
	PGRunning  = "running"
	PGStarting = "starting"
	PGStopping = "stopping"
	PGStopped  = "stopped"
	PGCrashed  = "crashed"
	PGUnknown  = "unknown"
)

// UrgentTags are the keys whose change is broadcast at once; changes to
// any other key (the LSN mark above all) are coalesced to at most one
// broadcast per Config.TagInterval.
var urgentTags = []string{TagRole, TagPG, TagRaft, TagCluster}

// MaxTagBytes is the limit on the encoded tags (memberlist's node meta).
const MaxTagBytes = memberlist.MetaMaxSize

// tagMagicByte is serf's prefix for msgpack-encoded tags.
const tagMagicByte = 255

// EncodedTagSize is the size of tags on the wire, exactly as serf encodes
// them (a magic byte and a msgpack map).
func EncodedTagSize(tags map[string]string) (int, error) {
	var buf bytes.Buffer
	buf.WriteByte(tagMagicByte)
	if err := codec.NewEncoder(&buf, &codec.MsgpackHandle{}).Encode(tags); err != nil {
		return 0, fmt.Errorf("encoding tags: %w", err)
	}
	return buf.Len(), nil
}

// CheckTags returns an error naming the size and the largest values when
// tags exceed MaxTagBytes.
func CheckTags(tags map[string]string) error {
	n, err := EncodedTagSize(tags)
	if err != nil {
		return err
	}
	if n <= MaxTagBytes {
		return nil
	}
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return len(keys[i])+len(tags[keys[i]]) > len(keys[j])+len(tags[keys[j]])
	})
	if len(keys) > 3 {
		keys = keys[:3]
	}
	return fmt.Errorf("tags encode to %d bytes, over the gossip limit of %d (largest: %v)", n, MaxTagBytes, keys)
}

// tagger owns the local tags: it publishes urgent changes at once and
// coalesces the rest so that a busy primary (whose LSN mark moves all
// the time) sends at most one update per interval.
type tagger struct {
	publish  func(map[string]string) error // serf.SetTags
	interval time.Duration
	onError  func(error)

	pubMu sync.Mutex // serialises publish calls

	mu        sync.Mutex
	desired   map[string]string
	published map[string]string
	lastSent  time.Time
	timer     *time.Timer
	closed    bool
	inFlight  sync.WaitGroup
}

func newTagger(initial map[string]string, interval time.Duration, publish func(map[string]string) error, onError func(error)) *tagger {
	return &tagger{
		publish:   publish,
		interval:  interval,
		onError:   onError,
		desired:   maps.Clone(initial),
		published: maps.Clone(initial),
	}
}

func (t *tagger) current() map[string]string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return maps.Clone(t.desired)
}

// set replaces the tags. It returns once an urgent change is broadcast, or
// at once when the change is coalesced.
func (t *tagger) set(tags map[string]string) error {
	if tags == nil {
		tags = map[string]string{}
	}
	if err := CheckTags(tags); err != nil {
		return err
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return errShutdown
	}
	t.desired = maps.Clone(tags)
	urgent := false
	for _, k := range urgentTags {
		if t.published[k] != tags[k] {
			urgent = true
		}
	}
	wait := t.interval - time.Since(t.lastSent)
	if !urgent && wait > 0 {
		if t.timer == nil {
			t.inFlight.Add(1)
			t.timer = time.AfterFunc(wait, t.flushTimer)
		}
		t.mu.Unlock()
		return nil
	}
	t.mu.Unlock()
	return t.flush()
}

func (t *tagger) flushTimer() {
	defer t.inFlight.Done()
	t.mu.Lock()
	t.timer = nil
	t.mu.Unlock()
	if err := t.flush(); err != nil && err != errShutdown {
		t.onError(err)
	}
}

// flush publishes the desired tags if they differ from what went out.
func (t *tagger) flush() error {
	t.pubMu.Lock()
	defer t.pubMu.Unlock()
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return errShutdown
	}
	if maps.Equal(t.desired, t.published) {
		t.mu.Unlock()
		return nil
	}
	tags := maps.Clone(t.desired)
	t.published = tags
	t.lastSent = time.Now()
	t.mu.Unlock()
	// serf blocks until the update has been broadcast (or its broadcast
	// timeout); it has applied the tags locally either way.
	if err := t.publish(tags); err != nil {
		return fmt.Errorf("broadcasting tags: %w", err)
	}
	return nil
}

// close stops the coalescing timer and waits for a running flush.
func (t *tagger) close() {
	t.mu.Lock()
	t.closed = true
	if t.timer != nil && t.timer.Stop() {
		t.timer = nil
		t.inFlight.Done()
	}
	t.mu.Unlock()
	t.inFlight.Wait()
}

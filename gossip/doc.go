// Package gossip is pgbattery's membership layer: a thin wrapper around
// hashicorp/serf and hashicorp/memberlist (unforked) that gives the agent
// joining, node metadata as tags, and one stream of membership events with
// sub-second failure detection.
//
// # Events
//
// Events delivers Join, Suspect, Alive, Failed, Leave and Update, each with
// the node, its Member record and a monotonic timestamp. memberlist keeps
// its suspicion to itself (no callback; Members()[i].State reads alive,
// memberlist#266), so Suspect is built here from exported pieces:
//
//   - an independent prober pings the watched nodes (SetPrimary,
//     WatchNodes) every Timing.WatchInterval and every other node every
//     Timing.BackgroundInterval with Memberlist.Ping; a ping without an ack
//     within ProbeTimeout makes the node Suspect;
//   - every ack counts, ours and memberlist's own probes' (through a
//     memberlist.PingDelegate; serf's coordinate delegate is disabled to make
//     room for it); an ack from a suspect node emits Alive;
//   - serf's EventMemberFailed (memberlist's suspicion timeout) emits Suspect
//     if we had not yet, and starts a second, independent check: Failed is
//     emitted only when no ack has been seen from the node for
//     Timing.ConfirmWindow and a fresh direct ping fails, or a TCP connection
//     to its gossip port is refused (the process is gone). A node that still
//     answers is asked to rejoin and refutes its death; it never becomes
//     Failed. Small clusters get no corroboration from Lifeguard, so this
//     check is what keeps one slow observer from failing a healthy primary.
//
// Every Failed is preceded by a Suspect. The channel is bounded
// (Config.EventBuffer); a slow consumer loses events, which are counted
// (Dropped, metric gossip.event.dropped under the agent's metrics_prefix) and logged, and never
// blocks gossip. Members is always current and reports suspect too.
//
// # Tags
//
// Node metadata travels as serf tags; the encoded set must fit in
// MaxTagBytes (512), and SetTags/UpdateTags/New refuse more with an error.
// The keys pgbattery uses:
//
//	role       primary | replica | witness | unknown
//	pg         PostgreSQL state: running | starting | stopping | stopped | crashed | unknown
//	gw         gateway address, host:port
//	api        HTTP API address, host:port
//	raft       raft suffrage: voter | nonvoter | none
//	raft_addr  raft transport address, host:port
//	build      pgbattery version
//	lsn        coarse WAL high-water mark: LSN >> 20 in hex (MiB)
//	cluster    cluster id
//	dc         data centre or zone
//
// Changes to role, pg, raft and cluster are broadcast before SetTags
// returns; any other change (lsn above all) is coalesced to at most one
// broadcast per Config.TagInterval, so a busy primary does not flood gossip.
//
// # Timing
//
// Profiles "local", "lan" (default) and "wan" set memberlist's and our
// timing; Config.Timing overrides them field by field. docs/gossip.md has
// the numbers, how they were measured and the resulting detection times.
//
// # Metrics
//
// Counters gossip.event.<type> (join, suspect, alive, failed,
// leave, update, dropped) and the sample gossip.probe.rtt_ms, all
// labelled with the peer, go to Config.Metrics or, when nil, to go-metrics'
// global instance (where serf and memberlist report as well).
package gossip

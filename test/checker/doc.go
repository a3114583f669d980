// Package checker judges histories recorded by pgbattery's fault-injection
// workloads (test/workload). Every checker is a pure function from a
// history to a Result: no I/O except the optional porcupine visualization the
// register checker writes when asked to.
//
// A history is a list of operations, each with the times it was invoked and
// completed on one process-wide monotonic Clock, the client that ran it, and
// an Outcome:
//
//   - OutcomeOK: the database acknowledged it; it happened.
//   - OutcomeFailed: it certainly did not take effect (see Classify).
//   - OutcomeUnknown: it may or may not have taken effect (40003, 08007, a
//     connection lost while a COMMIT or autocommit write was in flight, a
//     timeout). Checkers accept both possibilities for these.
//
// # What an error means (Classify)
//
// Whether a failed operation "certainly did not happen" depends on the
// stage it failed in and the error:
//
//	stage                              error                                outcome
//	read-only statement                any                                  failed (no effect either way)
//	statement inside BEGIN…, before    any (40001 from the gateway at        failed (the client never
//	  COMMIT was sent                    failover, lost connection, …)        sends COMMIT for it)
//	COMMIT or autocommit write         ERROR in class 0A 21 22 23 25 26     failed
//	                                     28 2B 2D 3D 3F 40 (not 40003) 42
//	                                     44 53 54 55; ROLLBACK answer to
//	                                     COMMIT; nothing sent (connect
//	                                     failed, pgconn.SafeToRetry)
//	COMMIT or autocommit write         40003, 08xxx (incl. 08007), 57xxx     unknown
//	                                     (57P01, 57014), 58xxx, XX, any
//	                                     FATAL/PANIC, timeout, cancelled
//	                                     context, lost connection
//
// PostgreSQL raises an ERROR only before a transaction's commit record is
// written; a failure at or after that point is a PANIC or ends the
// connection. A cancel or termination while a COMMIT waits for a
// synchronous standby comes after the commit record (PostgreSQL commits
// locally and warns), hence class 57 is unknown. The gateway's synthetic
// answers follow design.md §6: 40001 certainly not committed, 40003 and
// 08007 unknown.
//
// # Time
//
// All times are time.Duration offsets on one Clock (monotonic, one
// process). Fault and failover Events recorded by the harness must use the
// same Clock.
package checker

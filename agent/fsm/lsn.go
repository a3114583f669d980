package fsm

import "github.com/pgbattery/pgbattery/pgctl"

// LSN is a PostgreSQL write-ahead log position. It is pgctl's type, so a
// position read from PostgreSQL goes into a command without conversion. In
// the Raft log and in snapshots it is written as PostgreSQL renders it
// ("16/B374D848"); the plain numbers earlier agents wrote still read.
type LSN = pgctl.LSN

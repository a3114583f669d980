package command

import "testing"

func TestTable(t *testing.T) {
	tab := newTable("Node", "Epoch", "Voter")
	tab.row("n1", uint64(3), true)
	tab.row("node-two", 12, false)
	want := "" +
		"Node      Epoch  Voter\n" +
		"n1        3      true\n" +
		"node-two  12     false\n"
	if got := tab.String(); got != want {
		t.Fatalf("got\n%q\nwant\n%q", got, want)
	}
	// String flushes without losing or repeating anything.
	if got := tab.String(); got != want {
		t.Fatalf("second String: got\n%q\nwant\n%q", got, want)
	}
}

func TestTableLinesBetweenRows(t *testing.T) {
	tab := newTable("Epoch", "To")
	tab.row(1, "n2")
	tab.line("    reason: %s", "primary n1 failed")
	tab.line("    candidate %s", "n3")
	tab.row(20, "n1")
	// Rows after a free-form line are aligned among themselves, as
	// `pgbattery history -detailed` has always printed them.
	want := "" +
		"Epoch  To\n" +
		"1      n2\n" +
		"    reason: primary n1 failed\n" +
		"    candidate n3\n" +
		"20  n1\n"
	if got := tab.String(); got != want {
		t.Fatalf("got\n%q\nwant\n%q", got, want)
	}
}

func TestTableWithoutHeader(t *testing.T) {
	tab := newTable()
	if got := tab.String(); got != "" {
		t.Fatalf("empty table rendered %q", got)
	}
	tab.row("Cluster:", "c1")
	tab.row("Raft leader:", "-")
	want := "Cluster:      c1\nRaft leader:  -\n"
	if got := tab.String(); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

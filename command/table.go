package command

import (
	"bytes"
	"fmt"
	"text/tabwriter"
)

// table lays out rows in aligned columns, the way every table of the CLI
// looks: columns separated by at least two spaces, no trailing padding.
type table struct {
	buf bytes.Buffer
	tw  *tabwriter.Writer
}

// newTable starts a table; a header, if given, is its first row.
func newTable(header ...string) *table {
	t := &table{}
	t.tw = tabwriter.NewWriter(&t.buf, 0, 8, 2, ' ', 0)
	if len(header) > 0 {
		cells := make([]any, len(header))
		for i, h := range header {
			cells[i] = h
		}
		t.row(cells...)
	}
	return t
}

// row adds a row; each cell is rendered as fmt.Sprint renders it.
func (t *table) row(cells ...any) {
	for i, c := range cells {
		if i > 0 {
			t.tw.Write([]byte{'\t'})
		}
		fmt.Fprint(t.tw, c)
	}
	t.tw.Write([]byte{'\n'})
}

// line writes a free-form line under the rows so far (details of the row
// above, say). Rows after it are aligned among themselves.
func (t *table) line(format string, args ...any) {
	t.tw.Flush()
	fmt.Fprintf(&t.buf, format, args...)
	t.buf.WriteByte('\n')
}

// String returns the rendered table, every line ending in a newline.
func (t *table) String() string {
	t.tw.Flush()
	return t.buf.String()
}

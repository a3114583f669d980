package config

import (
	"fmt"
	"strings"
)

// Pos says where a value came from: a file position or a flag.
type Pos struct {
	File string // file path as it was given
	Line int    // 1-based; 0 when unknown
	Col  int    // 1-based; 0 when unknown
	Flag string // flag name with its dash, e.g. "-data-dir", for flag values
}

// String formats the position as "FILE:LINE", "flag -NAME", "FILE" or "".
func (p Pos) String() string {
	switch {
	case p.Flag != "":
		return "flag " + p.Flag
	case p.File != "" && p.Line > 0:
		return fmt.Sprintf("%s:%d", p.File, p.Line)
	default:
		return p.File
	}
}

// Error is one problem found in the configuration.
type Error struct {
	Pos Pos
	Key string // dotted key path, e.g. "ports.postgres"; "" for syntax errors
	Msg string
}

// Error formats as "FILE:LINE: KEY: message", "FILE:LINE:COL: message" for
// syntax errors, "flag -NAME: message" for flags and "KEY: message" when the
// value came from no source (a missing required key).
func (e *Error) Error() string {
	var parts []string
	switch {
	case e.Pos.Flag != "":
		parts = append(parts, e.Pos.String())
	case e.Key == "" && e.Pos.Col > 0:
		parts = append(parts, fmt.Sprintf("%s:%d:%d", e.Pos.File, e.Pos.Line, e.Pos.Col))
		parts = append(parts, e.Msg)
		return strings.Join(parts, ": ")
	case e.Pos.File != "":
		parts = append(parts, e.Pos.String())
	}
	if e.Key != "" && e.Pos.Flag == "" {
		parts = append(parts, e.Key)
	}
	parts = append(parts, e.Msg)
	return strings.Join(parts, ": ")
}

// Errors is every problem Load found, in source order. Its Error method
// puts one problem on each line.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

package config

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	hcljson "github.com/hashicorp/hcl/v2/json"
	"github.com/zclconf/go-cty/cty"
)

// maxConfigFileSize caps how much of one config file is read.
const maxConfigFileSize = 4 << 20

// source is one configuration file's bytes.
type source struct {
	name string // as given, used in messages
	data []byte
	json bool
}

// positions records where each key of a Config was set: "ports.postgres",
// map entries as "postgres.parameters.NAME", list elements as
// "retry_join[2]" (index within the merged list).
type positions map[string]Pos

// decoded is one source decoded, with the position of everything it set.
type decoded struct {
	cfg  Config
	pos  positions
	list map[string][]Pos // positions of list elements, by list key
}

// decodeSource parses and decodes one file. It walks the body itself, field
// by field, rather than calling gohcl.DecodeBody, so that every attribute's
// key path and position are known for the messages of later checks, and
// unknown keys are reported with their path.
func decodeSource(src source) (*decoded, Errors) {
	var (
		file  *hcl.File
		diags hcl.Diagnostics
	)
	if src.json {
		file, diags = hcljson.Parse(src.data, src.name)
	} else {
		file, diags = hclsyntax.ParseConfig(src.data, src.name, hcl.InitialPos)
	}
	if diags.HasErrors() {
		return nil, diagErrors(diags, "")
	}
	d := &decoded{pos: positions{}, list: map[string][]Pos{}}
	var errs Errors
	decodeBody(file.Body, reflect.ValueOf(&d.cfg).Elem(), "", d, &errs)
	return d, errs
}

// diagErrors turns hcl diagnostics into Errors. Syntax errors carry no key
// and print with a column.
func diagErrors(diags hcl.Diagnostics, key string) Errors {
	var errs Errors
	for _, diag := range diags {
		if diag.Severity != hcl.DiagError {
			continue
		}
		e := &Error{Key: key, Msg: diagMessage(diag)}
		if diag.Subject != nil {
			e.Pos = Pos{File: diag.Subject.Filename, Line: diag.Subject.Start.Line, Col: diag.Subject.Start.Column}
		}
		errs = append(errs, e)
	}
	return errs
}

func diagMessage(diag *hcl.Diagnostic) string {
	detail := strings.TrimSpace(diag.Detail)
	// gohcl's type errors read "Unsuitable value type: Unsuitable value: a
	// number is required"; keep the useful half.
	detail = strings.TrimPrefix(detail, "Unsuitable value: ")
	if strings.Contains(detail, "must be a whole number") {
		// gocty's wording lists the int64 range, which helps nobody.
		detail = "a whole number is required"
	}
	if detail == "" {
		return diag.Summary
	}
	if diag.Summary == "Unsuitable value type" || diag.Summary == "Incorrect attribute value type" {
		return "wrong type: " + detail
	}
	return diag.Summary + ": " + detail
}

func rangePos(r hcl.Range) Pos {
	return Pos{File: r.Filename, Line: r.Start.Line, Col: r.Start.Column}
}

func joinKey(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

// fieldByTag finds the struct field whose hcl tag names name.
func fieldByTag(v reflect.Value, name string) (reflect.Value, bool) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		tag := t.Field(i).Tag.Get("hcl")
		if n, _, _ := strings.Cut(tag, ","); n == name {
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}

// decodeBody decodes body into the struct v, whose fields carry hcl tags.
func decodeBody(body hcl.Body, v reflect.Value, prefix string, d *decoded, errs *Errors) {
	schema, _ := gohcl.ImpliedBodySchema(v.Addr().Interface())
	attrNames := map[string]bool{}
	blockNames := map[string]bool{}
	for _, a := range schema.Attributes {
		attrNames[a.Name] = true
	}
	for _, b := range schema.Blocks {
		blockNames[b.Type] = true
	}

	content, remain, diags := body.PartialContent(schema)
	for _, e := range diagErrors(diags, prefix) {
		// Name the key the problem is in (e.g. "ports": 5 in JSON).
		if name := keyAt(body, e.Pos); name != "" {
			e.Key = joinKey(prefix, name)
			e.Pos.Col = 0
			if strings.HasPrefix(e.Msg, "Incorrect JSON value type") {
				e.Msg = "must be a JSON object (a block), or an array of them"
			}
		}
		*errs = append(*errs, e)
	}
	reportUnknown(body, remain, prefix, attrNames, blockNames, errs)
	if content == nil {
		return
	}

	// Attributes in source order, so errors come out in file order.
	attrs := make([]*hcl.Attribute, 0, len(content.Attributes))
	for _, a := range content.Attributes {
		attrs = append(attrs, a)
	}
	sort.Slice(attrs, func(i, j int) bool { return attrs[i].Range.Start.Byte < attrs[j].Range.Start.Byte })
	for _, attr := range attrs {
		key := joinKey(prefix, attr.Name)
		field, _ := fieldByTag(v, attr.Name)
		d.pos[key] = rangePos(attr.NameRange)
		if val, ds := attr.Expr.Value(nil); !ds.HasErrors() && hugeNumber(val) {
			// cty turns a number into a string digit by digit: 1e100000000
			// would take minutes. No setting needs such a number.
			*errs = append(*errs, &Error{Pos: Pos{File: attr.NameRange.Filename, Line: attr.NameRange.Start.Line}, Key: key, Msg: "number out of range"})
			continue
		}
		if ds := gohcl.DecodeExpression(attr.Expr, nil, field.Addr().Interface()); ds.HasErrors() {
			// The first diagnostic says it; the rest follow from it
			// ("Variables not allowed", then "value must be known").
			e := diagErrors(ds, key)[0]
			e.Pos.Col = 0
			*errs = append(*errs, e)
			field.Set(reflect.Zero(field.Type()))
			continue
		}
		recordElements(attr.Expr, key, field, d)
	}

	for _, block := range content.Blocks {
		key := joinKey(prefix, block.Type)
		field, _ := fieldByTag(v, block.Type)
		if _, seen := d.pos[key]; !seen {
			d.pos[key] = rangePos(block.DefRange)
		}
		fresh := reflect.New(field.Type().Elem())
		decodeBody(block.Body, fresh.Elem(), key, d, errs)
		// A block given twice in one file merges like two files would.
		if field.IsNil() {
			field.Set(fresh)
		} else {
			mergeStruct(field.Elem(), fresh.Elem())
		}
	}
}

// recordElements notes the positions of map entries and list elements.
func recordElements(expr hcl.Expression, key string, field reflect.Value, d *decoded) {
	switch field.Kind() {
	case reflect.Map:
		pairs, diags := hcl.ExprMap(expr)
		if diags.HasErrors() {
			return
		}
		for _, kv := range pairs {
			k, diags := kv.Key.Value(nil)
			if diags.HasErrors() || k.IsNull() || !k.IsKnown() || k.Type() != cty.String {
				continue
			}
			d.pos[key+"."+k.AsString()] = rangePos(kv.Key.Range())
		}
	case reflect.Slice:
		elems, diags := hcl.ExprList(expr)
		if diags.HasErrors() || len(elems) != field.Len() {
			// Fall back to the attribute's position for each element.
			for i := 0; i < field.Len(); i++ {
				d.list[key] = append(d.list[key], d.pos[key])
			}
			return
		}
		for _, e := range elems {
			d.list[key] = append(d.list[key], rangePos(e.Range()))
		}
	}
}

// reportUnknown reports every key of body that the schema does not know.
func reportUnknown(body, remain hcl.Body, prefix string, attrNames, blockNames map[string]bool, errs *Errors) {
	var valid []string
	for n := range attrNames {
		valid = append(valid, n)
	}
	for n := range blockNames {
		valid = append(valid, n)
	}
	unknown := func(name string, r hcl.Range, isBlock bool) {
		e := &Error{Pos: rangePos(r), Key: joinKey(prefix, name)}
		e.Pos.Col = 0
		switch {
		case isBlock && attrNames[name]:
			e.Msg = fmt.Sprintf("must be set as an attribute (%s = ...), not as a block", name)
		case !isBlock && blockNames[name]:
			e.Msg = fmt.Sprintf("must be a block (%s { ... }), not an attribute", name)
		default:
			e.Msg = "unknown key"
			if s := suggest(name, valid); s != "" {
				e.Msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
		}
		*errs = append(*errs, e)
	}

	if sb, ok := body.(*hclsyntax.Body); ok {
		// Attributes are a map: visit them in source order.
		attrs := make([]*hclsyntax.Attribute, 0, len(sb.Attributes))
		for _, a := range sb.Attributes {
			attrs = append(attrs, a)
		}
		sort.Slice(attrs, func(i, j int) bool { return attrs[i].NameRange.Start.Byte < attrs[j].NameRange.Start.Byte })
		for _, a := range attrs {
			if !attrNames[a.Name] {
				unknown(a.Name, a.NameRange, false)
			}
		}
		for _, b := range sb.Blocks {
			if !blockNames[b.Type] {
				unknown(b.Type, b.TypeRange, true)
			}
		}
		return
	}

	// JSON: whatever PartialContent left over is unknown.
	rest, _ := remain.JustAttributes()
	var names []string
	for n := range rest {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		return rest[names[i]].NameRange.Start.Byte < rest[names[j]].NameRange.Start.Byte
	})
	for _, n := range names {
		unknown(n, rest[n].NameRange, false)
	}
}

// suggest returns the valid name closest to name, if it is close enough to
// be a likely typo.
func suggest(name string, valid []string) string {
	sort.Strings(valid)
	best, bestDist := "", len(name)/3+2
	for _, v := range valid {
		if d := levenshtein(name, v); d < bestDist {
			best, bestDist = v, d
		}
	}
	return best
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// mergeStruct merges src into dst (both Config-shaped structs): set scalars
// in src win, lists append, maps merge key by key, blocks merge recursively.
func mergeStruct(dst, src reflect.Value) {
	for i := 0; i < dst.NumField(); i++ {
		df, sf := dst.Field(i), src.Field(i)
		switch df.Kind() {
		case reflect.Ptr:
			if sf.IsNil() {
				continue
			}
			if df.Type().Elem().Kind() == reflect.Struct {
				if df.IsNil() {
					df.Set(reflect.New(df.Type().Elem()))
				}
				mergeStruct(df.Elem(), sf.Elem())
				continue
			}
			v := reflect.New(df.Type().Elem())
			v.Elem().Set(sf.Elem())
			df.Set(v)
		case reflect.Slice:
			if sf.Len() > 0 {
				df.Set(reflect.AppendSlice(reflect.MakeSlice(df.Type(), 0, df.Len()+sf.Len()), df))
				df.Set(reflect.AppendSlice(df, sf))
			}
		case reflect.Map:
			if sf.IsNil() {
				continue
			}
			if df.IsNil() {
				df.Set(reflect.MakeMap(df.Type()))
			}
			iter := sf.MapRange()
			for iter.Next() {
				df.SetMapIndex(iter.Key(), iter.Value())
			}
		}
	}
}

// merged is the merge of every source, with the position of each value's
// latest setter.
type merged struct {
	cfg  Config
	pos  positions
	list map[string][]Pos
}

func (m *merged) add(d *decoded) {
	mergeStruct(reflect.ValueOf(&m.cfg).Elem(), reflect.ValueOf(&d.cfg).Elem())
	for k, p := range d.pos {
		m.pos[k] = p
	}
	for k, ps := range d.list {
		m.list[k] = append(m.list[k], ps...)
	}
}

// hugeNumber reports whether v holds a number (at any depth) too large or
// too precise for any setting.
func hugeNumber(v cty.Value) bool {
	if v.IsNull() || !v.IsKnown() {
		return false
	}
	ty := v.Type()
	switch {
	case ty == cty.Number:
		bf := v.AsBigFloat()
		if bf.IsInf() {
			return true
		}
		exp := bf.MantExp(nil)
		return exp > 128 || exp < -128
	case ty.IsObjectType() || ty.IsMapType() || ty.IsTupleType() || ty.IsListType() || ty.IsSetType():
		for it := v.ElementIterator(); it.Next(); {
			_, e := it.Element()
			if hugeNumber(e) {
				return true
			}
		}
	}
	return false
}

// keyAt returns the name of the attribute or block of body that contains
// pos, or "".
func keyAt(body hcl.Body, pos Pos) string {
	within := func(r hcl.Range) bool {
		if r.Start.Line > pos.Line || r.End.Line < pos.Line {
			return false
		}
		if r.Start.Line == pos.Line && pos.Col < r.Start.Column {
			return false
		}
		if r.End.Line == pos.Line && pos.Col > r.End.Column {
			return false
		}
		return true
	}
	if sb, ok := body.(*hclsyntax.Body); ok {
		for _, b := range sb.Blocks {
			if within(b.Range()) {
				return b.Type
			}
		}
		return ""
	}
	attrs, _ := body.JustAttributes()
	for name, a := range attrs {
		if within(a.Range) {
			return name
		}
	}
	return ""
}

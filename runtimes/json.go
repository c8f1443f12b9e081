package runtimes

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// member is one key of an ordered JSON object.
type member struct {
	key   string
	value any
}

// object is a JSON object whose keys are written in slice order.
type object []member

// pyJSON renders v like Python's json.dumps(v, indent=indent) (indent < 0
// means json.dumps(v) on one line): ", " and ": " separators on one line,
// "," and ": " when indented; non-ASCII escaped as \uXXXX (ensure_ascii);
// no HTML escaping. v may be an object, map[string]any (keys sorted),
// []any, []string, string, bool, nil, float64, int or json.Number.
func pyJSON(v any, indent int) string {
	var b strings.Builder
	writeJSON(&b, v, indent, 0)
	return b.String()
}

func writeJSON(b *strings.Builder, v any, indent, depth int) {
	switch v := v.(type) {
	case object:
		writeContainer(b, '{', '}', len(v), indent, depth, func(i int) {
			writeJSONString(b, v[i].key)
			b.WriteString(": ")
			writeJSON(b, v[i].value, indent, depth+1)
		})
	case map[string]any:
		keys := sortedKeys(v)
		writeContainer(b, '{', '}', len(keys), indent, depth, func(i int) {
			writeJSONString(b, keys[i])
			b.WriteString(": ")
			writeJSON(b, v[keys[i]], indent, depth+1)
		})
	case []any:
		writeContainer(b, '[', ']', len(v), indent, depth, func(i int) {
			writeJSON(b, v[i], indent, depth+1)
		})
	case []string:
		writeContainer(b, '[', ']', len(v), indent, depth, func(i int) {
			writeJSONString(b, v[i])
		})
	case string:
		writeJSONString(b, v)
	case bool:
		b.WriteString(strconv.FormatBool(v))
	case nil:
		b.WriteString("null")
	case int:
		b.WriteString(strconv.Itoa(v))
	case json.Number:
		b.WriteString(v.String())
	case float64:
		b.WriteString(pyFloat(v))
	default:
		// Not produced by decoded JSON; render its text as a string.
		writeJSONString(b, fmt.Sprint(v))
	}
}

func writeContainer(b *strings.Builder, open, closing byte, n, indent, depth int, item func(int)) {
	b.WriteByte(open)
	if n == 0 {
		b.WriteByte(closing)
		return
	}
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
			if indent < 0 {
				b.WriteByte(' ')
			}
		}
		newline(b, indent, depth+1)
		item(i)
	}
	newline(b, indent, depth)
	b.WriteByte(closing)
}

func newline(b *strings.Builder, indent, depth int) {
	if indent < 0 {
		return
	}
	b.WriteByte('\n')
	b.WriteString(strings.Repeat(" ", indent*depth))
}

// pyFloat formats a decoded JSON number the way Python prints the value
// json.loads would have produced: integers without a fraction, other floats
// in their shortest form.
func pyFloat(f float64) string {
	if f == math.Trunc(f) && math.Abs(f) < 1e16 {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// writeJSONString writes s as a JSON string with Python's ensure_ascii
// escaping. Invalid UTF-8 bytes become U+FFFD.
func writeJSONString(b *strings.Builder, s string) {
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		default:
			switch {
			case r < 0x20 || r >= 0x7f && r <= 0xffff:
				fmt.Fprintf(b, `\u%04x`, r)
			case r > 0xffff:
				r -= 0x10000
				fmt.Fprintf(b, `\u%04x\u%04x`, 0xd800+(r>>10), 0xdc00+(r&0x3ff))
			default:
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
}

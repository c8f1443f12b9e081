package schema

import (
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// intBounds are optional pydantic ge/le constraints on an integer field.
type intBounds struct {
	ge, le       int64
	hasGE, hasLE bool
}

// asString validates a pydantic `str` value: only strings are accepted (lax
// mode does not turn numbers or booleans into strings). maxLen <= 0 means no
// limit; the limit counts Unicode code points, like Python's len.
func asString(v any, l []any, maxLen int) (string, *FieldError) {
	s, ok := v.(string)
	if !ok {
		fe := stringTypeErr(l, v)
		return "", &fe
	}
	if maxLen > 0 && utf8.RuneCountInString(s) > maxLen {
		fe := stringTooLongErr(l, v, maxLen)
		return "", &fe
	}
	return s, nil
}

// asInt validates a pydantic `int` value in lax Python mode: integers,
// booleans, floats without a fractional part and strings that parse as an
// integer (surrounding whitespace, "_" digit separators and a ".000" tail are
// allowed). Values outside int64 are reported as int_parsing_size.
func asInt(v any, l []any, b intBounds) (int64, *FieldError) {
	n, fe := coerceInt(v, l)
	if fe != nil {
		return 0, fe
	}
	if b.hasGE && n < b.ge {
		return 0, &FieldError{
			Type:  TypeGreaterThanEqual,
			Loc:   l,
			Msg:   fmt.Sprintf("Input should be greater than or equal to %d", b.ge),
			Input: v,
			Ctx:   map[string]any{"ge": b.ge},
		}
	}
	if b.hasLE && n > b.le {
		return 0, &FieldError{
			Type:  TypeLessThanEqual,
			Loc:   l,
			Msg:   fmt.Sprintf("Input should be less than or equal to %d", b.le),
			Input: v,
			Ctx:   map[string]any{"le": b.le},
		}
	}
	return n, nil
}

func coerceInt(v any, l []any) (int64, *FieldError) {
	mk := func(typ, msg string) (int64, *FieldError) {
		return 0, &FieldError{Type: typ, Loc: l, Msg: msg, Input: v}
	}
	switch x := v.(type) {
	case bool:
		if x {
			return 1, nil
		}
		return 0, nil
	case int:
		return int64(x), nil
	case int32:
		return int64(x), nil
	case int64:
		return x, nil
	case float32:
		return floatAsInt(float64(x), mk)
	case float64:
		return floatAsInt(x, mk)
	case json.Number:
		s := string(x)
		if strings.ContainsAny(s, ".eE") {
			// A JSON number with a fraction or exponent is a Python float.
			f, err := strconv.ParseFloat(s, 64)
			if err != nil && !math.IsInf(f, 0) {
				return mk(TypeIntParsing, MsgIntParsing)
			}
			return floatAsInt(f, mk)
		}
		n, ok := parseInt64(s)
		if !ok {
			if _, isBig := new(big.Int).SetString(s, 10); isBig {
				return mk(TypeIntParsingSize, MsgIntParsingSize)
			}
			return mk(TypeIntParsing, MsgIntParsing)
		}
		return n, nil
	case string:
		return strAsInt(x, mk)
	default:
		return mk(TypeIntType, MsgIntType)
	}
}

func floatAsInt(f float64, mk func(string, string) (int64, *FieldError)) (int64, *FieldError) {
	switch {
	case math.IsInf(f, 0) || math.IsNaN(f):
		return mk(TypeFiniteNumber, MsgFiniteNumber)
	case math.Mod(f, 1) != 0:
		return mk(TypeIntFromFloat, MsgIntFromFloat)
	case f <= math.MinInt64 || f >= math.MaxInt64:
		return mk(TypeIntParsingSize, MsgIntParsingSize)
	}
	return int64(f), nil
}

// strAsInt mirrors pydantic-core's str_as_int.
func strAsInt(s string, mk func(string, string) (int64, *FieldError)) (int64, *FieldError) {
	s = strings.TrimFunc(s, unicode.IsSpace)
	if len(s) > 4300 {
		return mk(TypeIntParsingSize, MsgIntParsingSize)
	}
	candidates := []string{s}
	if i := strings.IndexByte(s, '.'); i >= 0 && strings.Trim(s[i+1:], "0") == "" {
		candidates = append(candidates, s[:i])
	}
	for _, c := range candidates {
		if u, ok := stripUnderscores(c); ok {
			c = u
		}
		if n, ok := parseInt64(c); ok {
			return n, nil
		}
		if isDecimalInt(c) {
			return mk(TypeIntParsingSize, MsgIntParsingSize)
		}
	}
	return mk(TypeIntParsing, MsgIntParsing)
}

// parseInt64 accepts an optional sign and ASCII digits only.
func parseInt64(s string) (int64, bool) {
	if !isDecimalInt(s) {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

func isDecimalInt(s string) bool {
	if s != "" && (s[0] == '+' || s[0] == '-') {
		s = s[1:]
	}
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// stripUnderscores removes "_" separators that sit between two digits, as
// Python's int() allows; ok is false when there are none or one is misplaced.
func stripUnderscores(s string) (string, bool) {
	if !strings.Contains(s, "_") {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		if s[i] != '_' {
			continue
		}
		if i == 0 || i == len(s)-1 || !isDigit(s[i-1]) || !isDigit(s[i+1]) {
			return "", false
		}
	}
	return strings.ReplaceAll(s, "_", ""), true
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// asDict validates a pydantic `dict` value.
func asDict(v any, l []any) (map[string]any, *FieldError) {
	m, ok := v.(map[string]any)
	if !ok {
		fe := dictTypeErr(l, v)
		return nil, &fe
	}
	return m, nil
}

// asList validates a pydantic `list` value.
func asList(v any, l []any) ([]any, *FieldError) {
	s, ok := v.([]any)
	if !ok {
		fe := listTypeErr(l, v)
		return nil, &fe
	}
	if s == nil {
		s = []any{}
	}
	return s, nil
}

// asStringMap validates a pydantic `dict[str, str]` value, reporting every
// non-string value (keys in sorted order).
func asStringMap(v any, l []any) (map[string]string, []FieldError) {
	m, fe := asDict(v, l)
	if fe != nil {
		return nil, []FieldError{*fe}
	}
	out := make(map[string]string, len(m))
	var errs []FieldError
	for _, k := range sortedKeys(m) {
		s, fe := asString(m[k], append(cloneLoc(l), k), 0)
		if fe != nil {
			errs = append(errs, *fe)
			continue
		}
		out[k] = s
	}
	if errs != nil {
		return nil, errs
	}
	return out, nil
}

func cloneLoc(l []any) []any {
	return append(make([]any, 0, len(l)+2), l...)
}

// pyStrip is Python's str.strip() with no arguments.
func pyStrip(s string) string {
	return strings.TrimFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || (r >= 0x1c && r <= 0x1f)
	})
}

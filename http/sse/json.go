package sse

import (
	"slices"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// verbatim[c] reports whether byte c is copied into a JSON string as is:
// printable ASCII other than '"' and '\\'.
var verbatim = func() (t [256]bool) {
	for c := 0x20; c < 0x7f; c++ {
		t[c] = true
	}
	t['"'] = false
	t['\\'] = false
	return t
}()

// AppendString appends s as a JSON string exactly as Python's json.dumps
// (ensure_ascii=True) writes it: '"' and '\\' and the control characters
// \b \f \n \r \t get short escapes, every other character outside printable
// ASCII (including DEL) becomes \uXXXX in lowercase hex, characters above
// U+FFFF become a surrogate pair, and '/', '<', '>', '&' are left alone.
// Each byte of s that is not part of valid UTF-8 is written as \ufffd.
// The output is pure ASCII and never contains a newline.
func AppendString(dst []byte, s string) []byte {
	dst = slices.Grow(dst, len(s)+2)
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if verbatim[c] {
			i++
			continue
		}
		dst = append(dst, s[start:i]...)
		if c < utf8.RuneSelf {
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = appendU4(dst, rune(c))
			}
			i++
		} else {
			r, size := utf8.DecodeRuneInString(s[i:]) // (RuneError, 1) for an invalid byte
			if r > 0xffff {
				r1, r2 := utf16.EncodeRune(r)
				dst = appendU4(appendU4(dst, r1), r2)
			} else {
				dst = appendU4(dst, r)
			}
			i += size
		}
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendU4 appends \uXXXX for a rune of at most 16 bits.
func appendU4(dst []byte, r rune) []byte {
	return append(dst, '\\', 'u',
		hexDigits[r>>12&0xf], hexDigits[r>>8&0xf], hexDigits[r>>4&0xf], hexDigits[r&0xf])
}

// AppendInt appends n as a JSON number, as Python writes an int.
func AppendInt(dst []byte, n int64) []byte {
	return strconv.AppendInt(dst, n, 10)
}

// AppendBool appends true or false.
func AppendBool(dst []byte, b bool) []byte {
	if b {
		return append(dst, "true"...)
	}
	return append(dst, "false"...)
}

// AppendNull appends null, Python's None.
func AppendNull(dst []byte) []byte {
	return append(dst, "null"...)
}

// AppendKey appends an object key and its ": " separator, preceded by the
// ", " item separator unless dst ends with the object's opening '{'. An
// object is written as '{', then AppendKey and a value per member in the
// wanted order, then '}'; objects nest the same way.
func AppendKey(dst []byte, key string) []byte {
	if n := len(dst); n > 0 && dst[n-1] != '{' {
		dst = append(dst, ',', ' ')
	}
	dst = AppendString(dst, key)
	return append(dst, ':', ' ')
}

package actors

import (
	"strings"
	"unicode/utf8"
)

// textDecoder turns one stream's bytes into valid UTF-8 text (D6): an
// incomplete sequence at the end of a read is carried into the next one;
// invalid bytes and NUL become U+FFFD (Postgres text cannot hold NUL).
type textDecoder struct {
	carry []byte
	// consumed counts the raw bytes turned into text so far (carry
	// excluded): the offset to re-attach from.
	consumed int64
}

// decode returns the text for p (possibly empty while a sequence is
// incomplete).
func (d *textDecoder) decode(p []byte) string {
	if len(d.carry) > 0 {
		p = append(append([]byte(nil), d.carry...), p...)
		d.carry = d.carry[:0]
	}
	// Hold back an incomplete trailing sequence.
	end := len(p)
	for i := len(p) - 1; i >= 0 && i >= len(p)-utf8.UTFMax; i-- {
		if utf8.RuneStart(p[i]) {
			if !utf8.FullRune(p[i:]) {
				end = i
			}
			break
		}
	}
	d.carry = append(d.carry, p[end:]...)
	d.consumed += int64(end)
	return sanitize(p[:end])
}

// flush returns whatever is still carried (the stream ended mid-sequence).
func (d *textDecoder) flush() string {
	if len(d.carry) == 0 {
		return ""
	}
	s := sanitize(d.carry)
	d.consumed += int64(len(d.carry))
	d.carry = d.carry[:0]
	return s
}

func sanitize(p []byte) string {
	if utf8.Valid(p) && !containsNUL(p) {
		return string(p)
	}
	var b strings.Builder
	b.Grow(len(p))
	for len(p) > 0 {
		r, size := utf8.DecodeRune(p)
		if r == 0 || (r == utf8.RuneError && size == 1) {
			b.WriteRune(utf8.RuneError)
		} else {
			b.Write(p[:size])
		}
		p = p[size:]
	}
	return b.String()
}

func containsNUL(p []byte) bool {
	for _, c := range p {
		if c == 0 {
			return true
		}
	}
	return false
}

package schema

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// body decodes a JSON object the way the HTTP layer does (UseNumber).
func body(t *testing.T, s string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.UseNumber()
	var m map[string]any
	require.NoError(t, dec.Decode(&m))
	return m
}

// value decodes any JSON value with UseNumber.
func value(t *testing.T, s string) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.UseNumber()
	var v any
	require.NoError(t, dec.Decode(&v))
	return v
}

// wantErr is the expected shape of one FieldError. Input is compared as
// JSON text when non-empty.
type wantErr struct {
	Type  string
	Loc   []any
	Msg   string
	Input string
}

func jsonText(t *testing.T, v any) string {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	require.NoError(t, enc.Encode(v))
	return string(bytes.TrimRight(buf.Bytes(), "\n"))
}

// requireValidation asserts err is a *ValidationError with exactly want.
func requireValidation(t *testing.T, err error, want ...wantErr) {
	t.Helper()
	require.Error(t, err)
	var ve *ValidationError
	require.ErrorAs(t, err, &ve, "want *ValidationError, got %T: %v", err, err)
	got := make([]wantErr, len(ve.Errors))
	for i, fe := range ve.Errors {
		got[i] = wantErr{Type: fe.Type, Loc: fe.Loc, Msg: fe.Msg}
		if i < len(want) && want[i].Input != "" {
			got[i].Input = jsonText(t, fe.Input)
		}
	}
	require.Equal(t, want, got)
}

// requireString asserts err is a *StringError with message msg.
func requireString(t *testing.T, err error, msg string) {
	t.Helper()
	require.Error(t, err)
	var se *StringError
	require.ErrorAs(t, err, &se, "want *StringError, got %T: %v", err, err)
	require.Equal(t, msg, se.Message)
}

func ptr[T any](v T) *T { return &v }

func valueError(l []any, msg string) wantErr {
	return wantErr{Type: TypeValueError, Loc: l, Msg: "Value error, " + msg}
}

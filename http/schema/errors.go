package schema

import (
	"errors"
	"fmt"
	"strings"
)

// PydanticURLVersion is the pydantic minor version used in the "url" of 422
// error items. Clients must not rely on it (aod-api.md §12).
const PydanticURLVersion = "2.11"

// Pydantic v2 error types produced by this package.
const (
	TypeDictType         = "dict_type"
	TypeFiniteNumber     = "finite_number"
	TypeGreaterThanEqual = "greater_than_equal"
	TypeIntFromFloat     = "int_from_float"
	TypeIntParsing       = "int_parsing"
	TypeIntParsingSize   = "int_parsing_size"
	TypeIntType          = "int_type"
	TypeLessThanEqual    = "less_than_equal"
	TypeListType         = "list_type"
	TypeLiteralError     = "literal_error"
	TypeMissing          = "missing"
	TypeModelType        = "model_type"
	TypeStringTooLong    = "string_too_long"
	TypeStringType       = "string_type"
	TypeValueError       = "value_error"
)

// Pydantic v2 messages for the fixed-text error types.
const (
	MsgDictType       = "Input should be a valid dictionary"
	MsgFiniteNumber   = "Input should be a finite number"
	MsgIntFromFloat   = "Input should be a valid integer, got a number with a fractional part"
	MsgIntParsing     = "Input should be a valid integer, unable to parse string as an integer"
	MsgIntParsingSize = "Unable to parse input string as an integer, exceeded maximum size"
	MsgIntType        = "Input should be a valid integer"
	MsgListType       = "Input should be a valid list"
	MsgMissing        = "Field required"
	MsgStringType     = "Input should be a valid string"
)

// FieldError is one pydantic v2 validation error.
type FieldError struct {
	// Type is the pydantic error type, e.g. "missing" or "value_error".
	Type string
	// Loc is the path to the offending value: field names (string) and list
	// indexes (int).
	Loc []any
	// Msg is the human-readable message, e.g. "Field required".
	Msg string
	// Input is the offending value as submitted; for "missing" it is the
	// whole body object.
	Input any
	// Ctx holds pydantic's error context (e.g. {"max_length": 200}); nil
	// when the type has none.
	Ctx map[string]any
}

// ValidationError is a schema validation failure, rendered as
// 422 {"detail": e.Detail()}.
type ValidationError struct {
	// Errors are in pydantic's order: model field order, then position.
	Errors []FieldError
}

// Error implements error.
func (e *ValidationError) Error() string {
	parts := make([]string, 0, len(e.Errors))
	for _, fe := range e.Errors {
		loc := make([]string, 0, len(fe.Loc))
		for _, l := range fe.Loc {
			loc = append(loc, fmt.Sprint(l))
		}
		parts = append(parts, strings.Join(loc, ".")+": "+fe.Msg)
	}
	return "validation error: " + strings.Join(parts, "; ")
}

// ErrorDetail is one item of a 422 "detail" list. Its JSON encoding has
// pydantic's key order: type, loc, msg, input, ctx (only when set), url.
type ErrorDetail struct {
	Type  string         `json:"type"`
	Loc   []any          `json:"loc"`
	Msg   string         `json:"msg"`
	Input any            `json:"input"`
	Ctx   map[string]any `json:"ctx,omitempty"`
	URL   string         `json:"url"`
}

// Detail returns the "detail" list exactly as the reference service sends
// it: pydantic's errors(include_context=False), so items carry no "ctx"
// (views/_helpers.py parse_request_body; its tests pin the absence of ctx
// as part of the public contract). Use DetailWithContext to include ctx.
func (e *ValidationError) Detail() []ErrorDetail {
	return e.detail(false)
}

// DetailWithContext is Detail with each item's pydantic "ctx" included when
// the error type has one (value_error's ctx renders as {"error": {}}, as
// FastAPI does).
func (e *ValidationError) DetailWithContext() []ErrorDetail {
	return e.detail(true)
}

func (e *ValidationError) detail(withCtx bool) []ErrorDetail {
	out := make([]ErrorDetail, 0, len(e.Errors))
	for _, fe := range e.Errors {
		d := ErrorDetail{
			Type:  fe.Type,
			Loc:   fe.Loc,
			Msg:   fe.Msg,
			Input: fe.Input,
			URL:   "https://errors.pydantic.dev/" + PydanticURLVersion + "/v/" + fe.Type,
		}
		if d.Loc == nil {
			d.Loc = []any{}
		}
		if withCtx && len(fe.Ctx) > 0 {
			d.Ctx = fe.Ctx
		}
		out = append(out, d)
	}
	return out
}

// StringError is a 422 whose detail is a plain string:
// 422 {"detail": e.Message}.
type StringError struct {
	Message string
}

// Error implements error.
func (e *StringError) Error() string { return e.Message }

// Detail422 returns the value of "detail" for a 422 response when err is a
// *ValidationError (its Detail list) or a *StringError (its message); ok is
// false for any other error. The handler answers 422 {"detail": detail}.
func Detail422(err error) (detail any, ok bool) {
	var ve *ValidationError
	if errors.As(err, &ve) {
		return ve.Detail(), true
	}
	var se *StringError
	if errors.As(err, &se) {
		return se.Message, true
	}
	return nil, false
}

func loc(parts ...any) []any { return parts }

func missingErr(l []any, body map[string]any) FieldError {
	return FieldError{Type: TypeMissing, Loc: l, Msg: MsgMissing, Input: body}
}

func stringTypeErr(l []any, v any) FieldError {
	return FieldError{Type: TypeStringType, Loc: l, Msg: MsgStringType, Input: v}
}

func stringTooLongErr(l []any, v any, max int) FieldError {
	return FieldError{
		Type:  TypeStringTooLong,
		Loc:   l,
		Msg:   fmt.Sprintf("String should have at most %d character%s", max, plural(max)),
		Input: v,
		Ctx:   map[string]any{"max_length": max},
	}
}

func dictTypeErr(l []any, v any) FieldError {
	return FieldError{Type: TypeDictType, Loc: l, Msg: MsgDictType, Input: v}
}

func listTypeErr(l []any, v any) FieldError {
	return FieldError{Type: TypeListType, Loc: l, Msg: MsgListType, Input: v}
}

// valueErr is a pydantic field_validator failure: "Value error, <msg>".
func valueErr(l []any, v any, msg string) FieldError {
	return FieldError{
		Type:  TypeValueError,
		Loc:   l,
		Msg:   "Value error, " + msg,
		Input: v,
		Ctx:   map[string]any{"error": map[string]any{}},
	}
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// errs collects field errors in order.
type errs []FieldError

func (e *errs) add(fe ...FieldError) { *e = append(*e, fe...) }

// err returns nil when nothing was collected, else a *ValidationError.
func (e errs) err() error {
	if len(e) == 0 {
		return nil
	}
	return &ValidationError{Errors: e}
}

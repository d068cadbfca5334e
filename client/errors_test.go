package client

import (
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestDecodeError(t *testing.T) {
	cases := []struct {
		name      string
		status    int
		body      string
		code      string
		retryable bool
		sentinel  error
	}{
		{"not found", 404, `{"error":{"code":"not_found","message":"key \"a\" not found","retryable":false}}`, "not_found", false, ErrNotFound},
		{"unavailable", 503, `{"error":{"code":"unavailable","message":"no leader"}}`, "unavailable", true, ErrUnavailable},
		{"outcome unknown", 504, `{"error":{"code":"outcome_unknown","message":"timeout","retryable":true}}`, "outcome_unknown", true, ErrOutcomeUnknown},
		{"lock held", 409, `{"error":{"code":"lock_held","message":"held","owner":"w3","token":4711}}`, "lock_held", false, ErrLockHeld},
		{"html from a proxy", 502, `<html><body>Bad Gateway</body></html>`, "unavailable", true, ErrUnavailable},
		{"empty 413", 413, ``, "too_large", false, ErrTooLarge},
		{"bad code falls back to status", 400, `{"error":{"code":"Not A Code!","message":"x"}}`, "invalid_argument", false, ErrInvalidArgument},
		{"unknown 409", 409, `conflict`, "unknown", false, nil},
		{"500 text", 500, "panic: boom\n", "internal", false, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := decodeError(tc.status, []byte(tc.body))
			if e.Code != tc.code || e.Retryable != tc.retryable || e.Status != tc.status {
				t.Errorf("got %+v, want code %q retryable %v", e, tc.code, tc.retryable)
			}
			if tc.sentinel != nil && !errors.Is(e, tc.sentinel) {
				t.Errorf("errors.Is(%v, %v) = false", e, tc.sentinel)
			}
			if e.Message == "" {
				t.Error("empty message")
			}
		})
	}

	e := decodeError(409, []byte(`{"error":{"code":"condition_failed","message":"m","current":{"key":"a","value":"1","mod_index":3}}}`))
	if e.Current == nil || e.Current.ModIndex != 3 || e.Current.Value != "1" {
		t.Errorf("current = %+v", e.Current)
	}
	e = decodeError(409, []byte(`{"error":{"code":"condition_failed","message":"m"},"current":{"key":"a","value":"2"}}`))
	if e.Current == nil || e.Current.Value != "2" {
		t.Errorf("top-level current = %+v", e.Current)
	}
	e = decodeError(409, []byte(`{"error":{"code":"lock_held","owner":"w3","token":4711}}`))
	if string(e.Details["owner"]) != `"w3"` || string(e.Details["token"]) != "4711" {
		t.Errorf("details = %v", e.Details)
	}
	if got := decodeError(400, []byte("evil \x1b[31mred\x1b[0m")).Message; strings.ContainsRune(got, '\x1b') {
		t.Errorf("control characters kept: %q", got)
	}
}

func FuzzDecodeError(f *testing.F) {
	f.Add(404, []byte(`{"error":{"code":"not_found","message":"key \"a\" not found","retryable":false}}`))
	f.Add(409, []byte(`{"error":{"code":"condition_failed","message":"m","current":{"key":"a","value":"1"}}}`))
	f.Add(409, []byte(`{"error":{"code":"lock_held","owner":"w","token":1},"current":{"key":"k"}}`))
	f.Add(503, []byte(`{"error":null}`))
	f.Add(500, []byte("\xff\xfe\x1b[2J"))
	f.Add(0, []byte(`{"error":{"code":123,"message":["x"],"retryable":"yes"}}`))
	f.Add(502, []byte(`<html>`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		e := decodeError(status, body)
		if e == nil {
			t.Fatal("nil error")
		}
		if e.Status != status {
			t.Errorf("status %d, want %d", e.Status, status)
		}
		if !validCode(e.Code) {
			t.Errorf("invalid code %q", e.Code)
		}
		if len(e.Message) > maxMessageLen || !utf8.ValidString(e.Message) {
			t.Errorf("message not bounded or not UTF-8: %q", e.Message)
		}
		for _, r := range e.Message {
			if unicode.IsControl(r) {
				t.Fatalf("control character in message %q", e.Message)
			}
		}
		if e.Error() == "" {
			t.Error("empty Error()")
		}
		if (e.Code == CodeUnavailable || e.Code == CodeOverloaded) && !e.Retryable {
			t.Error("retryable code not marked retryable")
		}
	})
}

func TestErrorIs(t *testing.T) {
	e := &Error{Code: CodeNotFound, Message: "x"}
	if !errors.Is(e, ErrNotFound) || errors.Is(e, ErrConditionFailed) {
		t.Error("Is by code broken")
	}
	if errors.Is(&Error{}, &Error{}) {
		t.Error("empty codes matched")
	}
}

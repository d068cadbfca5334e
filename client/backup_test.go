package client

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// A backup is checked whole before anything is written: every way of
// being cut short or malformed is an invalid_argument naming the line.
func TestReadBackupRefuses(t *testing.T) {
	const head = `{"cairn_backup":1,"created":"2026-11-22T05:00:00Z","prefix":""}` + "\n"
	good := head + `{"key":"a","value":"1"}` + "\n" + `{"key":"b","value_base64":"//4="}` + "\n" + `{"end":true,"keys":2}` + "\n"
	if n, err := readBackup(strings.NewReader(good), nil); err != nil || n != 2 {
		t.Fatalf("good backup: %d %v", n, err)
	}
	for name, text := range map[string]string{
		"empty":            "",
		"not a backup":     `{"hello":1}` + "\n",
		"newer format":     `{"cairn_backup":2}` + "\n" + `{"end":true}` + "\n",
		"no final line":    head + `{"key":"a","value":"1"}` + "\n",
		"cut mid-line":     good[:len(good)-12],
		"count mismatch":   head + `{"key":"a","value":"1"}` + "\n" + `{"end":true,"keys":3}` + "\n",
		"after final line": good + `{"key":"c","value":"1"}` + "\n",
		"no value":         head + `{"key":"a"}` + "\n" + `{"end":true,"keys":1}` + "\n",
		"both values":      head + `{"key":"a","value":"1","value_base64":"MQ=="}` + "\n" + `{"end":true,"keys":1}` + "\n",
		"bad base64":       head + `{"key":"a","value_base64":"%%"}` + "\n" + `{"end":true,"keys":1}` + "\n",
		"bad ttl":          head + `{"key":"a","value":"1","ttl":"soon"}` + "\n" + `{"end":true,"keys":1}` + "\n",
		"unknown field":    head + `{"key":"a","value":"1","lease":"x"}` + "\n" + `{"end":true,"keys":1}` + "\n",
		"no key":           head + `{"value":"1"}` + "\n" + `{"end":true,"keys":1}` + "\n",
	} {
		if _, err := readBackup(strings.NewReader(text), nil); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: %v, want invalid_argument", name, err)
		}
	}
}

// A value that is not UTF-8 arrives as value_base64 and reads back as the
// bytes written.
func TestKVValueBase64(t *testing.T) {
	var kv KV
	if err := json.Unmarshal([]byte(`{"key":"k","value_base64":"//4A","mod_index":3}`), &kv); err != nil {
		t.Fatal(err)
	}
	if kv.Value != "\xff\xfe\x00" || kv.Key != "k" || kv.ModIndex != 3 {
		t.Fatalf("decoded %+v", kv)
	}
	if err := json.Unmarshal([]byte(`{"key":"k","value_base64":"%%"}`), &kv); err == nil {
		t.Fatal("bad base64 accepted")
	}
}

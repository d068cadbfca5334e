package fsm

import (
	"encoding"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// persistedJSONTypes are the fsm types written to disk as JSON: the range
// descriptor (inside the meta group's log and snapshots, placement/meta.go)
// and the durability sidecar (durability.go), which holds one.
var persistedJSONTypes = []any{Range{}, sidecar{}}

// Every field of a persisted JSON type names its key explicitly: a Go
// rename must not change, silently, what is written to disk or what old
// files decode into (DESIGN.md "Persisted formats").
func TestPersistedJSONTypesHaveExplicitTags(t *testing.T) {
	for _, p := range untaggedJSONFields(persistedJSONTypes...) {
		t.Errorf("persisted field %s has no explicit json key", p)
	}
}

// Range's JSON is exactly what cf3dc0d wrote (Go's default keys, kept as
// explicit tags), byte for byte: older binaries in a rolling upgrade read
// what newer ones write, and the reverse. The literal is a descriptor from
// the meta log of test/testdata/upgrade/vcf3dc0d.
func TestRangeJSONIsCf3dc0dEncoding(t *testing.T) {
	const old = `{"ID":2,"Start":"Zw==","End":null,"Epoch":1,"Replicas":["n1","n2","n3"]}`
	want := Range{ID: 2, Start: []byte("g"), Epoch: 1, Replicas: []string{"n1", "n2", "n3"}}
	var got Range
	if err := json.Unmarshal([]byte(old), &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded %+v, want %+v", got, want)
	}
	b, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != old {
		t.Fatalf("encoded %s, want %s", b, old)
	}
	// The sidecar of the same fixture (n1/shards/1/fsm.db.state).
	const sc = `{"state":"clean","genesis":{"ID":1,"Start":null,"End":"Zw==","Epoch":1,"Replicas":["n1","n2","n3"]}}`
	var s sidecar
	if err := json.Unmarshal([]byte(sc), &s); err != nil {
		t.Fatal(err)
	}
	if s.State != sidecarClean || s.Genesis == nil || s.Genesis.ID != 1 || string(s.Genesis.End) != "g" || len(s.Genesis.Replicas) != 3 {
		t.Fatalf("sidecar decoded as %+v (genesis %+v)", s, s.Genesis)
	}
}

var (
	jsonMarshalerType = reflect.TypeFor[json.Marshaler]()
	textMarshalerType = reflect.TypeFor[encoding.TextMarshaler]()
)

// untaggedJSONFields returns the exported struct fields reachable from the
// types of values whose json tag does not name the key.
func untaggedJSONFields(values ...any) []string {
	var out []string
	seen := map[reflect.Type]bool{}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		if seen[t] {
			return
		}
		seen[t] = true
		if t.Implements(jsonMarshalerType) || t.Implements(textMarshalerType) {
			return // encodes itself
		}
		switch t.Kind() {
		case reflect.Pointer, reflect.Slice, reflect.Array:
			walk(t.Elem())
		case reflect.Map:
			walk(t.Key())
			walk(t.Elem())
		case reflect.Struct:
			for i := 0; i < t.NumField(); i++ {
				f := t.Field(i)
				if !f.IsExported() && !f.Anonymous {
					continue // encoding/json skips it
				}
				tag := f.Tag.Get("json")
				if tag == "-" {
					continue
				}
				if name, _, _ := strings.Cut(tag, ","); name == "" && !f.Anonymous {
					out = append(out, t.PkgPath()+"."+t.Name()+"."+f.Name)
				}
				walk(f.Type)
			}
		}
	}
	for _, v := range values {
		walk(reflect.TypeOf(v))
	}
	return out
}

package placement

import (
	"encoding"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// persistedJSONTypes are the types the meta group writes to disk as JSON:
// log entries (metaCommand) and snapshots (State), with everything they
// hold (fsm.Range, NodeInfo, Operation).
var persistedJSONTypes = []any{metaCommand{}, State{}}

// Every field of a persisted JSON type names its key explicitly: a Go
// rename must not change, silently, what is written to disk or what old
// logs decode into (placement/DESIGN.md "Persisted formats").
func TestPersistedMetaTypesHaveExplicitJSONTags(t *testing.T) {
	for _, p := range untaggedJSONFields(persistedJSONTypes...) {
		t.Errorf("persisted field %s has no explicit json key", p)
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

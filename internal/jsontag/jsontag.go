// Package jsontag finds struct fields whose JSON key comes from the Go field
// name rather than an explicit tag: in a persisted format such a field
// changes what is written to disk, silently, when the field is renamed. The
// format tests of fsm/ and placement/ run it over their persisted types.
package jsontag

import (
	"encoding"
	"encoding/json"
	"reflect"
	"strings"
)

var (
	jsonMarshalerType = reflect.TypeFor[json.Marshaler]()
	textMarshalerType = reflect.TypeFor[encoding.TextMarshaler]()
)

// Untagged returns the exported struct fields reachable from the types of
// values whose json tag does not name the key, as "pkgpath.Type.Field".
func Untagged(values ...any) []string {
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

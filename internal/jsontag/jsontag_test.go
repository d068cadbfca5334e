package jsontag

import (
	"slices"
	"testing"
)

type inner struct {
	Named   int `json:"named"`
	Unnamed int `json:",omitempty"`
}

type outer struct {
	Tagged   inner            `json:"tagged"`
	Bare     string           // no tag: found
	Skipped  int              `json:"-"`
	Nested   map[string]inner `json:"nested"`
	internal int
}

// The negative control of the format guards: untagged fields are found,
// through structs, maps and tags that set options only.
func TestUntagged(t *testing.T) {
	got := Untagged(outer{internal: 1}) // an unexported field is skipped, as encoding/json does
	want := []string{
		"github.com/cairndb/cairn/internal/jsontag.inner.Unnamed",
		"github.com/cairndb/cairn/internal/jsontag.outer.Bare",
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("Untagged = %v, want %v", got, want)
	}
}

package placement

import (
	"testing"
	"time"

	"github.com/cairndb/cairn/internal/clock"
)

// The configuration recipe (issue 11 item 6): DefaultDriverConfig is valid,
// negative settings are refused by Validate and NewDriver.
func TestDriverConfigValidate(t *testing.T) {
	if err := DefaultDriverConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	bad := map[string]func(c *DriverConfig){
		"negative report timeout": func(c *DriverConfig) { c.ReportTimeout = -time.Second },
		"negative interval":       func(c *DriverConfig) { c.Interval = -time.Second },
		"negative stall bound":    func(c *DriverConfig) { c.StallAfter = -time.Second },
		"negative max ops":        func(c *DriverConfig) { c.MaxOps = -1 },
	}
	for name, mutate := range bad {
		t.Run(name, func(t *testing.T) {
			c := DefaultDriverConfig()
			mutate(&c)
			if c.Validate() == nil {
				t.Fatal("Validate accepted it")
			}
			if _, err := NewDriver(c); err == nil {
				t.Fatal("NewDriver accepted it")
			}
		})
	}
}

// The driver's liveness decision reads its Clock: a node that reported is
// responsive until ReportTimeout passes on that clock, and no sooner.
func TestDriverDecidesOnItsClock(t *testing.T) {
	fake := clock.NewFake(time.Unix(1000, 0))
	c := DefaultDriverConfig()
	c.Clock = fake
	c.Alive = func() map[string]bool { return map[string]bool{"n2": true} }
	d, err := NewDriver(c)
	if err != nil {
		t.Fatal(err)
	}
	st := &State{ClusterID: "c", Nodes: map[string]NodeInfo{"n2": {ID: "n2"}}}
	d.ObserveNode("n2")
	if v := d.view(st); v.Nodes[0].Unresponsive {
		t.Fatal("a node that just reported counts as unresponsive")
	}
	fake.Advance(c.ReportTimeout + time.Millisecond)
	if v := d.view(st); !v.Nodes[0].Unresponsive {
		t.Fatal("a node silent for longer than ReportTimeout on the driver's clock still counts as responsive")
	}
}

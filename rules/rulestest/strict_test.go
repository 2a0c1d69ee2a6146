package rulestest

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sidecar/sidecar/rules"
)

// TestStrict: the examples' events run through the rules; a type error
// no case expects is reported at the line of the expression, a failure a
// case expects is not, and a rule no example reaches is reported too.
func TestStrict(t *testing.T) {
	set, err := rules.Load("testdata/strict-rules.yaml", rules.Options{Registry: rules.Builtin()})
	if err != nil {
		t.Fatal(err)
	}
	examples, err := Examples([]string{"testdata/strict-tests.yaml"})
	if err != nil || len(examples) != 3 {
		t.Fatalf("Examples = %d, %v; want 3", len(examples), err)
	}
	if ex := examples[1]; ex.Name != "a booking without a provider, expected to fail" || ex.Line != 7 ||
		ex.File != "testdata/strict-tests.yaml" || ex.Event.Type != "booking.created" || len(ex.Errors) != 1 {
		t.Errorf("examples[1] = %+v", ex)
	}
	list, err := Strict(context.Background(), set, examples)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`testdata/strict-rules.yaml:5: rule "high-rating": if: invalid operation: float64 > string (on the event of "a review", testdata/strict-tests.yaml:4)`,
		`testdata/strict-rules.yaml:10: rule "untested": no example event reaches it (on: invoice.paid, invoice.*): add a test case, so that it is checked`,
	}
	var got []string
	for _, e := range list {
		got = append(got, e.Error())
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Strict =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestStrictShippedRules: every shipped rule is reached by an example of
// testdata/rules, and none fails on them unexpectedly.
func TestStrictShippedRules(t *testing.T) {
	set, err := rules.Load("../../rules.yaml", rules.Options{Registry: rules.Builtin(),
		Lookup: func(string) (string, bool) { return "", false }})
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("../../testdata/rules/*.yaml")
	if len(files) == 0 {
		t.Fatal("no testdata/rules/*.yaml")
	}
	examples, err := Examples(files)
	if err != nil {
		t.Fatal(err)
	}
	list, err := Strict(context.Background(), set, examples)
	if err != nil || len(list) > 0 {
		t.Errorf("Strict(rules.yaml) = %v\n%v", err, list)
	}
}

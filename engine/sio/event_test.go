package sio

import (
	"encoding/json"
	"testing"
)

func TestSplitEvent(t *testing.T) {
	for _, tc := range []struct {
		in    string
		name  string
		arg   string // "" with a nil Arg
		nargs int
	}{
		{`["typing"]`, "typing", "", 0},
		{`["typing",{"to":"u2"}]`, "typing", `{"to":"u2"}`, 1},
		{`["typing",{"to":"u2","isTyping":true}]`, "typing", `{"to":"u2","isTyping":true}`, 1},
		{`["typing",{"to":"u2"},"MjAyNi0x"]`, "typing", `{"to":"u2"}`, 2},
		{`["hey","Jude"]`, "hey", `"Jude"`, 1},
		{`["message",1,"2",{"3":[true]}]`, "message", `1`, 3},
		{` [ "a" , [1,[2]] , "x" ] `, "a", `[1,[2]]`, 2},
		{"[\"a\",\n\t{\"k\":1}\r\n]", "a", `{"k":1}`, 1},
		{`["a","b]"]`, "a", `"b]"`, 1},
		{`["a",{"k":"}\"]"},0]`, "a", `{"k":"}\"]"}`, 2},
		{`["a",null]`, "a", `null`, 1},
		{`["a",-1.5e3,true]`, "a", `-1.5e3`, 2},
		{`["a",[]]`, "a", `[]`, 1},
		{`["a",""]`, "a", `""`, 1},
		{`["a\"b\\c"]`, `a"b\c`, "", 0},
		{`["\u00e9\ud83d\ude00"]`, "é😀", "", 0},
		{`[""]`, "", "", 0},
	} {
		e, err := SplitEvent([]byte(tc.in))
		if err != nil {
			t.Errorf("SplitEvent(%s) = %v", tc.in, err)
			continue
		}
		if string(e.Name) != tc.name || string(e.Arg) != tc.arg || (e.Arg == nil) != (tc.arg == "") || e.NArgs != tc.nargs {
			t.Errorf("SplitEvent(%s) = %q %q %d, want %q %q %d", tc.in, e.Name, e.Arg, e.NArgs, tc.name, tc.arg, tc.nargs)
		}
		checkSplitAgainstJSON(t, []byte(tc.in), e)
	}
}

// checkSplitAgainstJSON checks e, SplitEvent's reading of valid JSON data,
// against encoding/json's.
func checkSplitAgainstJSON(t *testing.T, data []byte, e Emit) {
	t.Helper()
	var elems []json.RawMessage
	if err := json.Unmarshal(data, &elems); err != nil {
		t.Fatalf("encoding/json refuses %q: %v", data, err)
	}
	var name string
	if err := json.Unmarshal(elems[0], &name); err != nil {
		t.Fatalf("encoding/json: the name of %q is no string: %v", data, err)
	}
	if string(e.Name) != name || e.NArgs != len(elems)-1 {
		t.Fatalf("SplitEvent(%q) = %q, %d args; encoding/json reads %q, %d args", data, e.Name, e.NArgs, name, len(elems)-1)
	}
	if e.NArgs > 0 && string(e.Arg) != string(elems[1]) {
		t.Fatalf("SplitEvent(%q) arg %q; encoding/json reads %q", data, e.Arg, elems[1])
	}
}

func TestSplitEventErrors(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want error
	}{
		{``, errEventPayload},
		{`{}`, errEventPayload},
		{`"x"`, errEventPayload},
		{`[`, errEventName},
		{`[]`, errEventName},
		{`[1]`, errEventName},
		{`[null,"a"]`, errEventName},
		{`["a`, errEventName},
		{`["\x"]`, errEventName},
		{`["a"`, errEventPayload},
		{`["a" 1]`, errEventPayload},
		{`["a"]x`, errEventPayload},
		{`["a",`, errJSON},
		{`["a",]`, errJSON},
		{`["a",{"b":1]`, errEventPayload}, // invalid JSON: some error, ParseSIO says which
		{`["a","b`, errJSON},
		{`["a",1`, errEventPayload},
	} {
		if _, err := SplitEvent([]byte(tc.in)); err != tc.want {
			t.Errorf("SplitEvent(%q) = %v, want %v", tc.in, err, tc.want)
		}
	}
}

func TestSplitEventAliases(t *testing.T) {
	in := []byte(`["typing",{"to":"u2"}]`)
	e, err := SplitEvent(in)
	if err != nil {
		t.Fatal(err)
	}
	if &e.Name[0] != &in[2] || &e.Arg[0] != &in[10] {
		t.Fatal("Name or Arg does not alias the payload")
	}
}

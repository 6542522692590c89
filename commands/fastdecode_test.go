package commands

import (
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestDecodeWireFastTakesTheCommonShape(t *testing.T) {
	tests := []struct {
		name  string
		value string
		fast  bool
	}{
		{"every field", changePrice, true},
		{"spaces everywhere", " {\n \"id\" : \"c\" ,\t\"aggregateId\":\"a\", \"type\":\"T\",\"expectedVersion\" : -2 , \"payload\" : { \"x\" : [1, \"}\" , null] } ,\"metadata\":{ \"u\" : \"v\" } } \n", true},
		{"empty object", `{}`, true},
		{"onConflict", `{"id":"c","aggregateId":"a","type":"T","expectedVersion":3,"onConflict":"rebase"}`, true},
		{"duplicate onConflict", `{"id":"c","aggregateId":"a","type":"T","expectedVersion":3,"onConflict":"rebase","onConflict":"strict"}`, false},
		{"payload null", `{"id":"c","aggregateId":"a","type":"T","expectedVersion":0,"payload":null}`, true},
		{"payload string", `{"id":"c","aggregateId":"a","type":"T","expectedVersion":0,"payload":"s\"}"}`, true},
		{"escaped id", `{"id":"c\u0031","aggregateId":"a","type":"T","expectedVersion":0}`, false},
		{"key in other case", `{"ID":"c","aggregateId":"a","type":"T","expectedVersion":0}`, false},
		{"unknown key", `{"id":"c","aggregateId":"a","type":"T","expectedVersion":0,"extra":1}`, false},
		{"duplicate key", `{"id":"c","id":"d","aggregateId":"a","type":"T","expectedVersion":0}`, false},
		{"quoted version", `{"id":"c","aggregateId":"a","type":"T","expectedVersion":"1"}`, false},
		{"fraction", `{"id":"c","aggregateId":"a","type":"T","expectedVersion":1.0}`, false},
		{"leading zero", `{"id":"c","aggregateId":"a","type":"T","expectedVersion":01}`, false},
		{"null id", `{"id":null,"aggregateId":"a","type":"T","expectedVersion":0}`, false},
		{"null metadata value", `{"id":"c","aggregateId":"a","type":"T","expectedVersion":0,"metadata":{"a":null}}`, false},
		{"trailing data", `{"id":"c","aggregateId":"a","type":"T","expectedVersion":0} {}`, false},
		{"invalid payload", `{"id":"c","aggregateId":"a","type":"T","expectedVersion":0,"payload":{"a":}}`, false},
		{"truncated", `{"id":"c","aggregateId":"a","type":"T","expectedVersion":0,"payload":{"a":1}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, fast := decodeWireFast([]byte(tt.value))
			if fast != tt.fast {
				t.Errorf("fast path took it: %v, want %v", fast, tt.fast)
			}
			checkFastAgrees(t, []byte(tt.value))
		})
	}
}

// checkFastAgrees checks that whatever the fast path accepts, encoding/json
// accepts too, with the same result.
func checkFastAgrees(t *testing.T, value []byte) {
	t.Helper()
	if !utf8.Valid(value) {
		return
	}
	fast, ok := decodeWireFast(value)
	if !ok {
		return
	}
	slow, err := decodeWire(value)
	if err != nil {
		t.Fatalf("the fast path accepted what encoding/json refuses (%v): %q", err, value)
	}
	if !reflect.DeepEqual(fast, slow) {
		t.Fatalf("the fast path and encoding/json disagree on %q:\nfast %#v\nslow %#v", value, fast, slow)
	}
}

// FuzzDecodeFast checks the fast path against encoding/json: every value it
// accepts decodes to the same wire command both ways.
func FuzzDecodeFast(f *testing.F) {
	f.Add([]byte(changePrice))
	f.Add([]byte(`{"id":"c","aggregateId":"a","type":"T","expectedVersion":-2,"payload":null,"metadata":{}}`))
	f.Add([]byte(`{"id":"c","aggregateId":"a","type":"T","expectedVersion":5,"onConflict":"rebase"}`))
	f.Add([]byte(`{"id":"c","aggregateId":"a","type":"T","expectedVersion":7,"payload":[1,{"a":"\"}"}],"metadata":{"k":"v","l":""}}`))
	// The seeds of FuzzDecode, whatever their key.
	seeds, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzDecode", "*"))
	for _, seed := range seeds {
		data, err := os.ReadFile(seed)
		if err != nil {
			f.Fatal(err)
		}
		lines := strings.Split(string(data), "\n")
		if len(lines) >= 3 {
			if value, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[2], "[]byte("), ")")); err == nil {
				f.Add([]byte(value))
			}
		}
	}
	f.Fuzz(func(t *testing.T, value []byte) {
		checkFastAgrees(t, value)
	})
}

package docs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/arbiter-cqrs/arbiter/events"
)

const (
	contractFile = "wire-contract.md"
	schemaGlob   = "schemas/*.schema.json"
	draft2020    = "https://json-schema.org/draft/2020-12/schema"
)

// allReasons lists every events.Reason; the schema and the examples must
// cover each.
var allReasons = []events.Reason{
	events.ReasonVersionConflict,
	events.ReasonRejected,
	events.ReasonInvalid,
	events.ReasonUnknownType,
	events.ReasonDuplicate,
}

// example is one marked JSON block of the contract.
type example struct {
	kind string // the marker's kind, which names the schema
	line int    // of the marker, 1-based
	body []byte
}

func (e example) String() string {
	return fmt.Sprintf("%s:%d (%s example)", contractFile, e.line, e.kind)
}

var markerPattern = regexp.MustCompile(`^<!--\s*example:\s*(\S+)\s*-->$`)

// readExamples returns the contract's marked examples, failing the test on a
// marker that is not followed by a ```json block, so that no example is
// silently skipped.
func readExamples(t *testing.T) []example {
	t.Helper()
	data, err := os.ReadFile(contractFile)
	if err != nil {
		t.Fatalf("read the contract: %v", err)
	}
	lines := strings.Split(string(data), "\n")
	var examples []example
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		match := markerPattern.FindStringSubmatch(line)
		if match == nil {
			if strings.HasPrefix(line, "<!--") && strings.Contains(line, "example") {
				t.Errorf("%s:%d: malformed example marker %q; write <!-- example: KIND -->", contractFile, i+1, line)
			}
			continue
		}
		if i+1 >= len(lines) || strings.TrimSpace(lines[i+1]) != "```json" {
			t.Errorf("%s:%d: example marker is not followed by a ```json line", contractFile, i+1)
			continue
		}
		end := i + 2
		for end < len(lines) && strings.TrimSpace(lines[end]) != "```" {
			end++
		}
		if end == len(lines) {
			t.Errorf("%s:%d: example's ```json block is never closed", contractFile, i+1)
			break
		}
		body := strings.Join(lines[i+2:end], "\n")
		examples = append(examples, example{kind: match[1], line: i + 1, body: []byte(body)})
		i = end
	}
	if len(examples) == 0 {
		t.Fatalf("%s has no marked examples", contractFile)
	}
	return examples
}

// schemaFile is one schema of the contract.
type schemaFile struct {
	kind   string // the file name without .schema.json
	path   string
	raw    map[string]any // the schema document, numbers as json.Number
	schema *jsonschema.Schema
}

// loadSchemas compiles every schema file, keyed by kind. The schemas are
// added under their $id, so references between them resolve offline.
func loadSchemas(t *testing.T) map[string]*schemaFile {
	t.Helper()
	paths, err := filepath.Glob(schemaGlob)
	if err != nil || len(paths) == 0 {
		t.Fatalf("no schema files match %s (err %v)", schemaGlob, err)
	}
	compiler := jsonschema.NewCompiler()
	compiler.DefaultDraft(jsonschema.Draft2020)
	compiler.AssertFormat()
	compiler.AssertContent()
	schemas := make(map[string]*schemaFile)
	ids := make(map[string]string)
	for _, path := range paths {
		name := filepath.Base(path)
		file := &schemaFile{kind: strings.TrimSuffix(name, ".schema.json"), path: path}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("read %s: %v", path, err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("%s is not JSON: %v", path, err)
		}
		raw, ok := doc.(map[string]any)
		if !ok {
			t.Fatalf("%s is not a JSON object", path)
		}
		file.raw = raw
		if got := raw["$schema"]; got != draft2020 {
			t.Errorf("%s: $schema is %v, want %s", path, got, draft2020)
		}
		id, _ := raw["$id"].(string)
		if !strings.HasSuffix(id, "/"+name) {
			t.Fatalf("%s: $id %q does not end in /%s", path, id, name)
		}
		if err := compiler.AddResource(id, doc); err != nil {
			t.Fatalf("add %s: %v", path, err)
		}
		ids[file.kind] = id
		schemas[file.kind] = file
	}
	for kind, file := range schemas {
		schema, err := compiler.Compile(ids[kind])
		if err != nil {
			t.Fatalf("compile %s: %v", file.path, err)
		}
		file.schema = schema
	}
	return schemas
}

// validate checks a JSON document against a schema.
func validate(schema *jsonschema.Schema, document []byte) error {
	instance, err := jsonschema.UnmarshalJSON(bytes.NewReader(document))
	if err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	return schema.Validate(instance)
}

func TestExamplesMatchSchemas(t *testing.T) {
	schemas := loadSchemas(t)
	for _, ex := range readExamples(t) {
		file, ok := schemas[ex.kind]
		if !ok {
			t.Errorf("%v: no schema %s.schema.json for this kind", ex, ex.kind)
			continue
		}
		if err := validate(file.schema, ex.body); err != nil {
			t.Errorf("%v does not match %s:\n%v", ex, file.path, err)
		}
	}
}

// TestExamplesMatchGoTypes checks that what the contract shows is what the
// Go code accepts (commands) and publishes (events, conflicts).
func TestExamplesMatchGoTypes(t *testing.T) {
	schemas := loadSchemas(t)
	for _, ex := range readExamples(t) {
		t.Run(fmt.Sprintf("%s_line_%d", ex.kind, ex.line), func(t *testing.T) {
			switch ex.kind {
			case "command":
				checkCommandExample(t, schemas, ex)
			case "event":
				checkEventExample(t, ex)
			case "conflict":
				checkConflictExample(t, schemas, ex)
			}
		})
	}
}

func checkCommandExample(t *testing.T, schemas map[string]*schemaFile, ex example) {
	var head struct {
		AggregateID string `json:"aggregateId"`
	}
	if err := json.Unmarshal(ex.body, &head); err != nil {
		t.Fatalf("%v is not JSON: %v", ex, err)
	}
	cmd, err := commands.Decode([]byte(head.AggregateID), ex.body, 0)
	if err != nil {
		t.Fatalf("%v: commands.Decode refuses it: %v", ex, err)
	}
	if err := cmd.Validate(); err != nil {
		t.Errorf("%v: Decode accepts it but Validate refuses it: %v", ex, err)
	}
	if cmd.Type == "AppendEvents" {
		if err := validate(schemas["append-events-payload"].schema, cmd.Payload); err != nil {
			t.Errorf("%v: AppendEvents payload does not match its schema:\n%v", ex, err)
		}
	}
}

func checkEventExample(t *testing.T, ex example) {
	var event events.Event
	if err := decodeStrictly(ex.body, &event); err != nil {
		t.Fatalf("%v does not decode into events.Event: %v", ex, err)
	}
	if want := events.EventID(event.AggregateID, event.Version); event.ID != want {
		t.Errorf("%v: id is %q, want %q (events.EventID)", ex, event.ID, want)
	}
	checkRepublished(t, ex, event)
}

func checkConflictExample(t *testing.T, schemas map[string]*schemaFile, ex example) {
	var conflict events.Conflict
	if err := decodeStrictly(ex.body, &conflict); err != nil {
		t.Fatalf("%v does not decode into events.Conflict: %v", ex, err)
	}
	checkRepublished(t, ex, conflict)

	// The command a conflict carries must agree with the conflict.
	if len(conflict.Command) == 0 {
		return
	}
	cmd, err := commands.Decode([]byte(conflict.AggregateID), conflict.Command, 0)
	if conflict.Reason == events.ReasonInvalid {
		if err != nil {
			return
		}
		// Decode accepts it, so its handler found the payload invalid.
		if cmd.Type == "AppendEvents" && validate(schemas["append-events-payload"].schema, cmd.Payload) == nil {
			t.Errorf("%v: an invalid conflict for an AppendEvents command whose payload is valid", ex)
		}
		return
	}
	if err != nil {
		t.Fatalf("%v: a %s conflict whose command commands.Decode refuses: %v", ex, conflict.Reason, err)
	}
	if cmd.ID != conflict.CommandID {
		t.Errorf("%v: commandId %q, but the command's id is %q", ex, conflict.CommandID, cmd.ID)
	}
	if conflict.ExpectedVersion == nil || *conflict.ExpectedVersion != cmd.ExpectedVersion {
		t.Errorf("%v: expectedVersion %v, but the command's is %d", ex, conflict.ExpectedVersion, cmd.ExpectedVersion)
	}
}

// decodeStrictly decodes one JSON value, refusing fields the Go type lacks.
func decodeStrictly(data []byte, into any) error {
	decoder := json.NewDecoder(bytes.NewReader(data))
	decoder.DisallowUnknownFields()
	if err := decoder.Decode(into); err != nil {
		return err
	}
	if _, err := decoder.Token(); err != io.EOF {
		return fmt.Errorf("data after the JSON value")
	}
	return nil
}

// checkRepublished fails when encoding the decoded record gives a different
// JSON value than the example: the example shows a record Arbiter would not
// publish (such as an empty field Go omits, or a timestamp Go writes
// differently).
func checkRepublished(t *testing.T, ex example, record any) {
	t.Helper()
	encoded, err := json.Marshal(record)
	if err != nil {
		t.Fatalf("%v: encode it again: %v", ex, err)
	}
	want, err := decodeJSONValue(ex.body)
	if err != nil {
		t.Fatalf("%v is not JSON: %v", ex, err)
	}
	got, err := decodeJSONValue(encoded)
	if err != nil {
		t.Fatalf("%v: encoded again, it is not JSON: %v", ex, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%v is not what Arbiter publishes; Go encodes it as\n%s", ex, encoded)
	}
}

func decodeJSONValue(data []byte) (any, error) {
	decoder := json.NewDecoder(bytes.NewReader(data))
	decoder.UseNumber()
	var value any
	err := decoder.Decode(&value)
	return value, err
}

func TestEverySchemaHasExamples(t *testing.T) {
	schemas := loadSchemas(t)
	count := make(map[string]int)
	for _, ex := range readExamples(t) {
		count[ex.kind]++
	}
	for kind, file := range schemas {
		if count[kind] == 0 {
			t.Errorf("%s has no example in %s; add one marked <!-- example: %s -->", file.path, contractFile, kind)
		}
	}
}

func TestEveryConflictReasonHasExample(t *testing.T) {
	seen := make(map[events.Reason]bool)
	for _, ex := range readExamples(t) {
		if ex.kind != "conflict" {
			continue
		}
		var conflict events.Conflict
		if err := json.Unmarshal(ex.body, &conflict); err != nil {
			t.Fatalf("%v: %v", ex, err)
		}
		seen[conflict.Reason] = true
	}
	for _, reason := range allReasons {
		if !seen[reason] {
			t.Errorf("no conflict example with reason %q in %s", reason, contractFile)
		}
	}
}

// TestSchemasAgreeWithGo checks the limits the schemas repeat from the Go
// code.
func TestSchemasAgreeWithGo(t *testing.T) {
	schemas := loadSchemas(t)
	command := schemas["command"].raw
	for _, field := range []string{"id", "aggregateId", "type"} {
		if got := lookup(t, command, "properties", field, "maxLength"); got != json.Number(fmt.Sprint(commands.MaxIDLength)) {
			t.Errorf("command schema: %s maxLength is %v, want commands.MaxIDLength %d", field, got, commands.MaxIDLength)
		}
	}
	if got := lookup(t, command, "properties", "expectedVersion", "minimum"); got != json.Number(fmt.Sprint(commands.MustExist)) {
		t.Errorf("command schema: expectedVersion minimum is %v, want commands.MustExist %d", got, commands.MustExist)
	}

	conflict := schemas["conflict"].raw
	var reasons []string
	for _, reason := range allReasons {
		reasons = append(reasons, string(reason))
	}
	// The processor remembers only these outcomes; invalid and unknown_type
	// records are answered without being recorded.
	originalReasons := []string{events.OriginalApplied, string(events.ReasonVersionConflict), string(events.ReasonRejected)}
	for _, enum := range []struct {
		field string
		want  []string
	}{
		{"reason", reasons},
		{"originalReason", originalReasons},
	} {
		var got []string
		values, _ := lookup(t, conflict, "properties", enum.field, "enum").([]any)
		for _, value := range values {
			got = append(got, fmt.Sprint(value))
		}
		slices.Sort(got)
		slices.Sort(enum.want)
		if !slices.Equal(got, enum.want) {
			t.Errorf("conflict schema: %s enum is %v, want %v", enum.field, got, enum.want)
		}
	}
}

func lookup(t *testing.T, document map[string]any, path ...string) any {
	t.Helper()
	var value any = document
	for _, key := range path {
		object, ok := value.(map[string]any)
		if !ok {
			t.Fatalf("schema has no %s", strings.Join(path, "."))
		}
		value = object[key]
	}
	return value
}

// edit returns a JSON object document changed by change.
func edit(document string, change func(map[string]any)) string {
	var object map[string]any
	decoder := json.NewDecoder(strings.NewReader(document))
	decoder.UseNumber()
	if err := decoder.Decode(&object); err != nil {
		panic(fmt.Sprintf("edit %s: %v", document, err))
	}
	change(object)
	edited, err := json.Marshal(object)
	if err != nil {
		panic(fmt.Sprintf("edit %s: %v", document, err))
	}
	return string(edited)
}

func set(key string, value any) func(map[string]any) {
	return func(object map[string]any) { object[key] = value }
}

func remove(key string) func(map[string]any) {
	return func(object map[string]any) { delete(object, key) }
}

// Valid documents that the rejection cases below break one way each.
const (
	validCommand = `{"id": "c-1", "aggregateId": "prod-123", "type": "ChangePrice", "expectedVersion": 5,
		"payload": {"newPrice": 22.00}, "metadata": {"user": "alice"}}`
	validEvent = `{"id": "prod-123@6", "aggregateId": "prod-123", "aggregateType": "Product", "type": "PriceReduced",
		"version": 6, "commandId": "c-1", "payload": {"oldPrice": 24.5, "newPrice": 22}, "metadata": {"user": "alice"},
		"timestamp": "2026-11-25T10:00:00.25Z"}`
	validVersionConflict = `{"commandId": "c-2", "aggregateId": "prod-123", "reason": "version_conflict",
		"expectedVersion": 5, "actualVersion": 6, "message": "expected version 5, but found 6",
		"command": {"id": "c-2", "aggregateId": "prod-123", "type": "ChangePrice", "expectedVersion": 5},
		"source": {"topic": "commands", "partition": 3, "offset": 42}, "timestamp": "2026-11-25T10:00:00Z"}`
	validInvalid = `{"aggregateId": "prod-123", "reason": "invalid", "message": "record value is not a JSON command object",
		"rawValue": "cHJpY2U9MjI=", "source": {"topic": "commands", "partition": 3, "offset": 64},
		"timestamp": "2026-11-25T10:08:30Z"}`
	validDuplicate = `{"commandId": "c-1", "aggregateId": "prod-123", "reason": "duplicate", "expectedVersion": 5,
		"actualVersion": 7, "message": "command c-1 was already decided", "originalReason": "applied",
		"originalVersion": 6, "command": {"id": "c-1", "aggregateId": "prod-123", "type": "ChangePrice", "expectedVersion": 5},
		"source": {"topic": "commands", "partition": 3, "offset": 66}, "timestamp": "2026-11-25T10:09:30Z"}`
	validAppendEvents = `{"events": [{"type": "ItemAdded", "payload": {"sku": "prod-123"}}, {"type": "CartCheckedOut"}]}`
)

// TestSchemasRejectInvalidDocuments makes sure the schemas are not so loose
// that the example checks above could never fail.
func TestSchemasRejectInvalidDocuments(t *testing.T) {
	schemas := loadSchemas(t)
	for _, valid := range []struct{ kind, document string }{
		{"command", validCommand},
		{"event", validEvent},
		{"conflict", validVersionConflict},
		{"conflict", validInvalid},
		{"conflict", validDuplicate},
		{"append-events-payload", validAppendEvents},
	} {
		if err := validate(schemas[valid.kind].schema, []byte(valid.document)); err != nil {
			t.Fatalf("the valid %s the cases start from is refused:\n%v", valid.kind, err)
		}
	}

	tests := []struct {
		kind     string
		name     string
		document string
	}{
		{"command", "not an object", `[]`},
		{"command", "missing expectedVersion", edit(validCommand, remove("expectedVersion"))},
		{"command", "null expectedVersion", edit(validCommand, set("expectedVersion", nil))},
		{"command", "expectedVersion -3", edit(validCommand, set("expectedVersion", -3))},
		{"command", "fractional expectedVersion", edit(validCommand, set("expectedVersion", json.Number("5.5")))},
		{"command", "string expectedVersion", edit(validCommand, set("expectedVersion", "5"))},
		{"command", "expectedVersion over int64", edit(validCommand, set("expectedVersion", json.Number("9223372036854775808")))},
		{"command", "missing id", edit(validCommand, remove("id"))},
		{"command", "empty id", edit(validCommand, set("id", ""))},
		{"command", "id over 256", edit(validCommand, set("id", strings.Repeat("x", commands.MaxIDLength+1)))},
		{"command", "numeric id", edit(validCommand, set("id", 1))},
		{"command", "missing aggregateId", edit(validCommand, remove("aggregateId"))},
		{"command", "aggregateId over 256", edit(validCommand, set("aggregateId", strings.Repeat("x", commands.MaxIDLength+1)))},
		{"command", "missing type", edit(validCommand, remove("type"))},
		{"command", "empty type", edit(validCommand, set("type", ""))},
		{"command", "metadata value not a string", edit(validCommand, set("metadata", map[string]any{"retries": 3}))},
		{"command", "metadata an array", edit(validCommand, set("metadata", []any{"alice"}))},
		{"command", "field name differing in case", edit(validCommand, set("ExpectedVersion", 6))},
		{"command", "field name with long s", edit(validCommand, set("expectedVerſion", 6))},
		{"command", "unknown onConflict", edit(validCommand, set("onConflict", "merge"))},
		{"command", "onConflict in other case", edit(validCommand, set("OnConflict", "rebase"))},

		{"event", "unknown field", edit(validEvent, set("sequence", 1))},
		{"event", "negative rebasedFrom", edit(validEvent, set("rebasedFrom", -1))},
		{"event", "version 0", edit(validEvent, set("version", 0))},
		{"event", "missing version", edit(validEvent, remove("version"))},
		{"event", "missing commandId", edit(validEvent, remove("commandId"))},
		{"event", "missing timestamp", edit(validEvent, remove("timestamp"))},
		{"event", "timestamp not UTC", edit(validEvent, set("timestamp", "2026-11-25T11:00:00+01:00"))},
		{"event", "timestamp not a date-time", edit(validEvent, set("timestamp", "yesterday"))},
		{"event", "timestamp in nanoseconds", edit(validEvent, set("timestamp", "2026-11-25T10:00:00.000000001Z"))},
		{"event", "timestamp with trailing zero", edit(validEvent, set("timestamp", "2026-11-25T10:00:00.250Z"))},
		{"event", "empty aggregateType", edit(validEvent, set("aggregateType", ""))},
		{"event", "id without version", edit(validEvent, set("id", "prod-123"))},
		{"event", "null metadata", edit(validEvent, set("metadata", nil))},
		{"event", "empty metadata", edit(validEvent, set("metadata", map[string]any{}))},

		{"conflict", "unknown reason", edit(validVersionConflict, set("reason", "timeout"))},
		{"conflict", "eventsSince on a duplicate", edit(validDuplicate, set("eventsSince", []any{map[string]any{"version": 6, "type": "StockIncreased", "id": "prod-123@6"}}))},
		{"conflict", "eventsSince entry without type", edit(validVersionConflict, set("eventsSince", []any{map[string]any{"version": 6, "id": "prod-123@6"}}))},
		{"conflict", "eventsSinceCount 0", edit(validVersionConflict, set("eventsSinceCount", 0))},
		{"conflict", "unknown field", edit(validVersionConflict, set("retryable", true))},
		{"conflict", "missing message", edit(validVersionConflict, remove("message"))},
		{"conflict", "missing source", edit(validVersionConflict, remove("source"))},
		{"conflict", "negative partition", edit(validVersionConflict, set("source", map[string]any{"topic": "commands", "partition": -1, "offset": 42}))},
		{"conflict", "source without offset", edit(validVersionConflict, set("source", map[string]any{"topic": "commands", "partition": 3}))},
		{"conflict", "version_conflict without actualVersion", edit(validVersionConflict, remove("actualVersion"))},
		{"conflict", "decoded command without commandId", edit(validVersionConflict, remove("commandId"))},
		{"conflict", "decoded command without expectedVersion", edit(validVersionConflict, remove("expectedVersion"))},
		{"conflict", "decoded command with expectedVersion -3", edit(validVersionConflict, set("expectedVersion", -3))},
		{"conflict", "decoded command without command", edit(validVersionConflict, remove("command"))},
		{"conflict", "decoded command with rawValue", edit(validVersionConflict, set("rawValue", "e30="))},
		{"conflict", "decoded command not an object", edit(validVersionConflict, set("command", "c-2"))},
		{"conflict", "originalReason on a version_conflict", edit(validVersionConflict, set("originalReason", "applied"))},
		{"conflict", "originalVersion on a version_conflict", edit(validVersionConflict, set("originalVersion", 6))},
		{"conflict", "invalid with actualVersion", edit(validInvalid, set("actualVersion", 6))},
		{"conflict", "invalid with command and rawValue", edit(validInvalid, set("command", map[string]any{}))},
		{"conflict", "rawValue not base64", edit(validInvalid, set("rawValue", "price=22"))},
		{"conflict", "unknown_type with actualVersion", edit(validVersionConflict, set("reason", "unknown_type"))},
		{"conflict", "duplicate without originalReason", edit(validDuplicate, remove("originalReason"))},
		{"conflict", "duplicate without originalVersion", edit(validDuplicate, remove("originalVersion"))},
		{"conflict", "originalReason duplicate", edit(validDuplicate, set("originalReason", "duplicate"))},
		{"conflict", "originalReason invalid", edit(validDuplicate, set("originalReason", "invalid"))},
		{"conflict", "rejected without actualVersion", edit(edit(validVersionConflict, set("reason", "rejected")), remove("actualVersion"))},
		{"conflict", "timestamp not UTC", edit(validDuplicate, set("timestamp", "2026-11-25T11:09:30+01:00"))},

		{"append-events-payload", "no events", `{"events": []}`},
		{"append-events-payload", "missing events", `{}`},
		{"append-events-payload", "events not an array", `{"events": {"type": "ItemAdded"}}`},
		{"append-events-payload", "event without type", `{"events": [{"payload": {}}]}`},
		{"append-events-payload", "event with empty type", `{"events": [{"type": ""}]}`},
		{"append-events-payload", "misspelled payload", `{"events": [{"type": "ItemAdded", "paylod": {}}]}`},
		{"append-events-payload", "unknown top-level field", edit(validAppendEvents, set("expectedVersion", 3))},
	}
	for _, tt := range tests {
		t.Run(tt.kind+"/"+tt.name, func(t *testing.T) {
			if err := validate(schemas[tt.kind].schema, []byte(tt.document)); err == nil {
				t.Errorf("%s schema accepts %s", tt.kind, tt.document)
			}
		})
	}
}

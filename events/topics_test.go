package events

import "testing"

func TestTopics(t *testing.T) {
	tests := []struct {
		name                       string
		commands, events, conflict string
		wantErr                    bool
	}{
		{"defaults", "", "", "", false},
		{"all different", "c", "e", "x", false},
		{"commands and events shared", "t", "t", "x", true},
		{"events and conflicts shared", "c", "t", "t", true},
		{"commands named like the default events topic", "events", "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, e, x := tt.commands, tt.events, tt.conflict
			SetDefaultTopics(&c, &e, &x)
			if c == "" || e == "" || x == "" {
				t.Fatalf("SetDefaultTopics left an empty name: %q %q %q", c, e, x)
			}
			if err := ValidateTopics(c, e, x); (err != nil) != tt.wantErr {
				t.Fatalf("ValidateTopics(%q, %q, %q) = %v, want error %v", c, e, x, err, tt.wantErr)
			}
		})
	}
}

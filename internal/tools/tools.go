//go:build tools

// Package tools pins the development tools the test command runs.
package tools

import (
	_ "honnef.co/go/tools/cmd/staticcheck"
)

package processor

import (
	"fmt"

	"go.uber.org/zap"
)

// errorField logs an error by its message: zap.Error would add the stack
// traces cockroachdb/errors carries ("errorVerbose"), kilobytes per line.
// The message is cut at maxLogError bytes: an error may quote a record.
func errorField(err error) zap.Field {
	if err == nil {
		return zap.Skip()
	}
	message := err.Error()
	if len(message) > maxLogError {
		message = fmt.Sprintf("%s… (%d bytes)", message[:maxLogError], len(message))
	}
	return zap.String("error", message)
}

// maxLogError bounds the error message of a log line.
const maxLogError = 1024

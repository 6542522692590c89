package processor

import "go.uber.org/zap"

// errorField logs an error by its message: zap.Error would add the stack
// traces cockroachdb/errors carries ("errorVerbose"), kilobytes per line.
func errorField(err error) zap.Field {
	if err == nil {
		return zap.Skip()
	}
	return zap.String("error", err.Error())
}

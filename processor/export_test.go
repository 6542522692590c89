package processor

import (
	"context"

	"github.com/twmb/franz-go/pkg/kgo"
)

// SetEndTransaction replaces how w ends its batches' transactions, for the
// tests of package processor_test (which import internal/verify, which
// imports this package). Call it before Run.
func SetEndTransaction(w *Worker, end func(ctx context.Context, sess *kgo.GroupTransactSession, commit kgo.TransactionEndTry) (committed bool, err error)) {
	w.endTransaction = end
}

package app

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arbiter-cqrs/arbiter/commands"
	"github.com/cockroachdb/errors"
	"github.com/spf13/cobra"
)

// notAppliedError marks a send --wait in which some command was not applied
// (exit code 5).
type notAppliedError struct{ msg string }

func (e *notAppliedError) Error() string { return e.msg }

// metadataFlag collects repeated --metadata key=value flags.
type metadataFlag map[string]string

func (m metadataFlag) String() string {
	parts := make([]string, 0, len(m))
	for k, v := range m {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, ",")
}

// Type implements pflag.Value.
func (m metadataFlag) Type() string { return "key=value" }

func (m metadataFlag) Set(value string) error {
	key, val, ok := strings.Cut(value, "=")
	if !ok || key == "" {
		return errors.Newf("%q is not key=value", value)
	}
	m[key] = val
	return nil
}

type sendFlags struct {
	commonFlags
	id              string
	aggregateID     string
	commandType     string
	expectedVersion string
	payload         string
	metadata        metadataFlag
	file            string
	wait            bool
	waitTimeout     time.Duration
	quiet           bool
	maxRecordBytes  int
	onConflict      string
}

const sendUsage = `usage:
  arbiter send [flags] --aggregate ID --type TYPE --expected-version N [--payload JSON] [--metadata k=v]...
  arbiter send [flags] -f commands.jsonl     (one command JSON per line; -f - or a pipe reads stdin)`

func (c *cli) sendCommand() *cobra.Command {
	f := sendFlags{metadata: metadataFlag{}}
	cmd := &cobra.Command{
		Use:   "send",
		Short: "send one command (--aggregate, --type, --expected-version, --payload) or many (-f file.jsonl, or stdin); --wait prints outcomes",
		Long:  sendUsage,
		Args:  cobra.NoArgs,
		RunE: c.run(func(ctx context.Context, _ []string) error {
			return runSend(ctx, f, c.stdout, c.stderr)
		}),
	}
	fs := cmd.Flags()
	f.register(fs)
	fs.StringVar(&f.id, "id", "", "command ID (default: a new UUID); resend with the same ID to learn a command's outcome safely")
	fs.StringVar(&f.aggregateID, "aggregate", "", "aggregate ID (also the record key)")
	fs.StringVar(&f.commandType, "type", "", "command type, e.g. ChangePrice")
	fs.StringVar(&f.expectedVersion, "expected-version", "", "the aggregate version you read: N >= 0 (0: must not exist), -1 any, -2 must exist (required)")
	fs.StringVar(&f.payload, "payload", "", "command payload, JSON")
	fs.Var(f.metadata, "metadata", "metadata key=value, carried to the events (repeatable)")
	fs.StringVarP(&f.file, "f", "f", "", "send every command of a JSONL file, one command JSON per line; - reads stdin")
	fs.BoolVar(&f.wait, "wait", false, "wait for each command's outcome and print it; exit code 5 if any was not applied")
	bind(fs, &f.waitTimeout, "wait-timeout", "ARBITER_WAIT_TIMEOUT", time.Minute, "with --wait: how long to wait for outcomes after the last command was sent")
	fs.BoolVar(&f.quiet, "quiet", false, "no progress lines on stderr")
	bind(fs, &f.onConflict, "on-conflict", "ARBITER_ON_CONFLICT", "", "strict (the default) or rebase: a stale command is decided again when nothing it depends on changed; with -f, for lines without their own onConflict")
	bind(fs, &f.maxRecordBytes, "max-record-bytes", "ARBITER_MAX_RECORD_BYTES", commands.DefaultMaxRecordBytes, "largest command sent; keep it at the workers' limit")
	return cmd
}

// runSend sends one command from flags, or many from a JSONL file or stdin.
func runSend(ctx context.Context, f sendFlags, stdout, stderr io.Writer) error {
	switch f.onConflict {
	case "", commands.OnConflictStrict, commands.OnConflictRebase:
	default:
		return usagef("--on-conflict %q is not valid: use %s or %s", f.onConflict, commands.OnConflictStrict, commands.OnConflictRebase)
	}
	single := f.aggregateID != "" || f.commandType != "" || f.expectedVersion != "" || f.payload != "" || f.id != "" || len(f.metadata) > 0
	input, total, closeInput, err := f.input(single)
	if err != nil {
		return err
	}
	if closeInput != nil {
		defer closeInput()
	}
	var cmd commands.Command
	if input == nil {
		if cmd, err = f.command(); err != nil {
			return err
		}
	}

	topics := []string{f.commandsTopic}
	if f.wait {
		topics = append(topics, f.eventsTopic, f.conflictsTopic)
	}
	if err := f.checkTopics(ctx, topics...); err != nil {
		return err
	}
	log, err := f.logger(stderr)
	if err != nil {
		return err
	}
	kafkaOptions, err := f.securityOpts()
	if err != nil {
		return err
	}
	producer, err := commands.NewProducer(ctx, commands.ProducerConfig{
		Brokers:         f.brokerList(),
		KafkaOptions:    kafkaOptions,
		CommandsTopic:   f.commandsTopic,
		EventsTopic:     f.eventsTopic,
		ConflictsTopic:  f.conflictsTopic,
		MaxRecordBytes:  f.maxRecordBytes,
		FollowFromStart: f.wait,
		OnConflict:      f.onConflict,
		Logger:          log,
	})
	if err != nil {
		return f.kafkaUnreachable(errors.Wrap(err, "start the producer"))
	}
	defer producer.Close()

	if input == nil {
		return sendOne(ctx, producer, cmd, f, stdout)
	}
	return sendMany(ctx, producer, input, total, f, stdout, stderr)
}

// input opens the JSONL input, if any, and counts its lines when it is a
// regular file (for the progress lines).
func (f *sendFlags) input(single bool) (io.Reader, int64, func(), error) {
	switch {
	case f.file != "" && single:
		return nil, 0, nil, usagef("give either -f or the command flags (--aggregate, --type, ...), not both\n%s", sendUsage)
	case f.file == "-" || (f.file == "" && !single && !isTerminal(os.Stdin)):
		return os.Stdin, -1, nil, nil
	case f.file == "":
		if !single {
			return nil, 0, nil, usagef("nothing to send\n%s", sendUsage)
		}
		return nil, 0, nil, nil
	}
	file, err := os.Open(f.file)
	if err != nil {
		return nil, 0, nil, usagef("-f %s: %v", f.file, err)
	}
	total := int64(-1)
	if info, err := file.Stat(); err == nil && info.Mode().IsRegular() {
		if total, err = countLines(file); err != nil {
			_ = file.Close()
			return nil, 0, nil, errors.Wrapf(err, "read %s", f.file)
		}
		if _, err := file.Seek(0, io.SeekStart); err != nil {
			_ = file.Close()
			return nil, 0, nil, errors.Wrapf(err, "read %s", f.file)
		}
	}
	return file, total, func() { _ = file.Close() }, nil
}

// countLines counts the non-blank lines of r.
func countLines(r io.Reader) (int64, error) {
	reader := bufio.NewReaderSize(r, 1<<20)
	var n int64
	for {
		line, err := reader.ReadSlice('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			n++
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			// A long line: the rest of it is read by the next calls.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = reader.ReadSlice('\n')
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return n, err
			}
			if errors.Is(err, io.EOF) {
				return n, nil
			}
		case errors.Is(err, io.EOF):
			return n, nil
		case err != nil:
			return n, err
		}
	}
}

// command builds the one command given by flags.
func (f *sendFlags) command() (commands.Command, error) {
	var missing []string
	if f.aggregateID == "" {
		missing = append(missing, "--aggregate")
	}
	if f.commandType == "" {
		missing = append(missing, "--type")
	}
	if f.expectedVersion == "" {
		missing = append(missing, "--expected-version (the version you read; 0 for a new aggregate)")
	}
	if len(missing) > 0 {
		return commands.Command{}, usagef("missing %s\n%s", strings.Join(missing, ", "), sendUsage)
	}
	expectedVersion, err := strconv.ParseInt(f.expectedVersion, 10, 64)
	if err != nil {
		return commands.Command{}, usagef("--expected-version %q is not an integer: use N >= 0, -1 (any) or -2 (must exist)", f.expectedVersion)
	}
	cmd := commands.Command{ID: f.id, AggregateID: f.aggregateID, Type: f.commandType, ExpectedVersion: expectedVersion, OnConflict: f.onConflict}
	if cmd.ID == "" {
		cmd.ID = commands.NewID()
	}
	if f.payload != "" {
		if !json.Valid([]byte(f.payload)) {
			return commands.Command{}, usagef("--payload is not valid JSON: %s", f.payload)
		}
		cmd.Payload = json.RawMessage(f.payload)
	}
	if len(f.metadata) > 0 {
		cmd.Metadata = f.metadata
	}
	if err := cmd.Validate(); err != nil {
		return commands.Command{}, usagef("%v", err)
	}
	return cmd, nil
}

func sendOne(ctx context.Context, producer *commands.Producer, cmd commands.Command, f sendFlags, stdout io.Writer) error {
	if !f.wait {
		sendCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := producer.Send(sendCtx, cmd); err != nil {
			return errors.Wrap(err, "is Kafka reachable? resend with the same --id to be safe")
		}
		printf(stdout, "sent command %s for aggregate %s\n", cmd.ID, cmd.AggregateID)
		return nil
	}
	waitCtx, cancel := context.WithTimeout(ctx, f.waitTimeout)
	defer cancel()
	applied, err := producer.SendAndWait(waitCtx, cmd)
	line, ok, failed := describeOutcome(cmd, applied, err)
	if failed != nil {
		return failed
	}
	printf(stdout, "%s\n", line)
	if !ok {
		return &notAppliedError{msg: fmt.Sprintf("command %s was not applied; read the aggregate again ('arbiter get %s') and send a new command with a new --id", cmd.ID, cmd.AggregateID)}
	}
	return nil
}

// describeOutcome returns the line printed for an outcome, whether the
// command was applied, and an error when there is no outcome to print.
func describeOutcome(cmd commands.Command, applied commands.Applied, err error) (string, bool, error) {
	if err == nil {
		line := fmt.Sprintf("%s %s: applied at version %d", cmd.ID, cmd.AggregateID, applied.Version)
		if len(applied.Events) > 0 && applied.Events[0].RebasedFrom != nil {
			line += fmt.Sprintf(" (rebased from expected version %d)", *applied.Events[0].RebasedFrom)
		}
		if applied.Duplicate {
			line += " (a resend: it was applied before)"
		}
		return line, true, nil
	}
	var conflict *commands.ConflictError
	if errors.As(err, &conflict) {
		line := fmt.Sprintf("%s %s: %s: %s", cmd.ID, cmd.AggregateID, conflict.Reason, conflict.Message)
		if conflict.Duplicate {
			line += " (a resend: the original got this outcome)"
		}
		if len(conflict.EventsSince) > 0 {
			since := make([]string, len(conflict.EventsSince))
			for i, e := range conflict.EventsSince {
				since[i] = fmt.Sprintf("%s@%d", e.Type, e.Version)
			}
			line += fmt.Sprintf(" (events since: %s", strings.Join(since, ", "))
			if int64(len(since)) < conflict.EventsSinceCount {
				line += fmt.Sprintf("; the last %d of %d", len(since), conflict.EventsSinceCount)
			}
			line += ")"
		}
		return line, false, nil
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "", false, errors.Wrapf(err, "no outcome for command %s in time: is a worker running? send it again with the same --id to learn its outcome", cmd.ID)
	}
	return "", false, err
}

// sendStats counts a bulk send; read by the progress goroutine.
type sendStats struct {
	read, sent, failed    atomic.Int64
	applied, notApplied   atomic.Int64
	timedOut, waitsFailed atomic.Int64
}

func sendMany(ctx context.Context, producer *commands.Producer, input io.Reader, total int64, f sendFlags, stdout, stderr io.Writer) error {
	var (
		stats   sendStats
		outMu   sync.Mutex
		out     = bufio.NewWriterSize(stdout, 64<<10)
		errMu   sync.Mutex
		pending sync.WaitGroup
	)
	report := func(format string, args ...any) {
		errMu.Lock()
		defer errMu.Unlock()
		printf(stderr, format, args...)
	}
	waitCtx, cancelWaits := context.WithCancel(ctx)
	defer cancelWaits()

	start := time.Now()
	progress := newProgress(stderr, total, &stats, start, f.quiet, &errMu)
	if f.wait {
		progress.verb = "answered"
	}
	progress.start()

	reader := bufio.NewReaderSize(input, 1<<20)
	lineNumber := 0
	var readErr error
	for ctx.Err() == nil {
		line, err := readLine(reader, f.maxRecordBytes)
		if errors.Is(err, io.EOF) && len(line) == 0 {
			break
		}
		lineNumber++ // line numbers count blank lines too, as editors do
		if err != nil && !errors.Is(err, io.EOF) {
			if errors.Is(err, errLineTooLong) {
				stats.read.Add(1)
				stats.failed.Add(1)
				report("line %d: over the %d-byte limit (--max-record-bytes); not sent\n", lineNumber, f.maxRecordBytes)
				continue
			}
			readErr = err
			break
		}
		if len(bytes.TrimSpace(line)) > 0 {
			number := lineNumber
			stats.read.Add(1)
			cmd, parseErr := commands.Parse(line)
			if parseErr != nil {
				stats.failed.Add(1)
				report("line %d: %v; not sent\n", number, parseErr)
			} else if f.wait {
				pending.Add(1)
				producer.SendAndWaitAsync(waitCtx, cmd, func(applied commands.Applied, err error) {
					defer pending.Done()
					line, ok, failed := describeOutcome(cmd, applied, err)
					switch {
					case failed != nil && errors.Is(failed, context.DeadlineExceeded), failed != nil && errors.Is(failed, context.Canceled):
						stats.timedOut.Add(1)
						return
					case failed != nil:
						stats.waitsFailed.Add(1)
						report("line %d: %v\n", number, failed)
						return
					case ok:
						stats.applied.Add(1)
					default:
						stats.notApplied.Add(1)
					}
					stats.sent.Add(1)
					outMu.Lock()
					fmt.Fprintf(out, "%s\n", line)
					outMu.Unlock()
				})
			} else {
				producer.SendAsync(ctx, cmd, func(err error) {
					if err != nil {
						stats.failed.Add(1)
						report("line %d: command %s: %v\n", number, cmd.ID, err)
						return
					}
					stats.sent.Add(1)
				})
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
	}
	if err := producer.Flush(ctx); err != nil && ctx.Err() == nil {
		report("flushing the last commands: %v\n", err)
	}
	sentIn := time.Since(start)
	if f.wait {
		// Outcomes get --wait-timeout from the moment the last command was
		// sent.
		timer := time.AfterFunc(f.waitTimeout, func() { cancelWaits() })
		pending.Wait()
		timer.Stop()
	}
	progress.stop()
	outMu.Lock()
	_ = out.Flush()
	outMu.Unlock()

	read, failed := stats.read.Load(), stats.failed.Load()
	elapsed := time.Since(start)
	rate := float64(read-failed) / sentIn.Seconds()
	if !f.quiet || failed > 0 {
		summary := fmt.Sprintf("sent %d of %d commands in %v (%.0f/s)", read-failed-stats.waitsFailed.Load(), read, sentIn.Round(time.Millisecond), rate)
		if f.wait {
			summary += fmt.Sprintf("; outcomes after %v: %d applied, %d not applied, %d without an outcome", elapsed.Round(time.Millisecond), stats.applied.Load(), stats.notApplied.Load(), stats.timedOut.Load()+stats.waitsFailed.Load())
		}
		report("%s\n", summary)
	}
	if readErr != nil {
		return errors.Wrapf(readErr, "read the commands at line %d; the lines before it were sent", lineNumber)
	}
	if ctx.Err() != nil {
		return errors.Newf("interrupted after reading %d lines; commands sent so far stay sent: resend the rest (resending a sent line with its id is safe)", lineNumber)
	}
	if failed > 0 || stats.waitsFailed.Load() > 0 {
		return errors.Newf("%d of %d lines were not sent (see the line numbers above); fix those lines and send them again (resending a sent line with its id is safe)", failed+stats.waitsFailed.Load(), read)
	}
	if n := stats.timedOut.Load(); n > 0 {
		return errors.Newf("%d commands got no outcome within --wait-timeout %v: is a worker running? send them again (same ids) to learn their outcomes", n, f.waitTimeout)
	}
	if n := stats.notApplied.Load(); n > 0 {
		return &notAppliedError{msg: fmt.Sprintf("%d of %d commands were not applied (see their outcomes above); read those aggregates again and send new commands with new ids", n, read)}
	}
	return nil
}

var errLineTooLong = errors.New("line too long")

// readLine reads one line without its newline. A line over limit bytes is
// consumed and reported as errLineTooLong.
func readLine(reader *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := reader.ReadSlice('\n')
		if len(line)+len(chunk) > limit+2 {
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = reader.ReadSlice('\n')
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return nil, err
			}
			return nil, errLineTooLong
		}
		line = append(line, chunk...)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		return bytes.TrimRight(line, "\r\n"), err
	}
}

// isTerminal reports whether f is a terminal (a character device).
func isTerminal(f *os.File) bool {
	info, err := f.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}

// progress prints how a bulk send goes to stderr: on a terminal one line
// rewritten every second; otherwise, so as not to fill a log, a line at every
// tenth of a known total, or every 10 seconds when the total is unknown.
// Inputs of at most 1000 lines get no progress lines.
type progress struct {
	w        io.Writer
	mu       *sync.Mutex
	total    int64
	stats    *sendStats
	began    time.Time
	terminal bool
	off      bool
	verb     string
	done     chan struct{}
	finished chan struct{}
}

func newProgress(w io.Writer, total int64, stats *sendStats, began time.Time, quiet bool, mu *sync.Mutex) *progress {
	file, isFile := w.(*os.File)
	return &progress{
		w: w, mu: mu, total: total, stats: stats, began: began,
		terminal: isFile && isTerminal(file),
		verb:     "sent",
		off:      quiet || (total >= 0 && total <= 1000),
		done:     make(chan struct{}),
		finished: make(chan struct{}),
	}
}

func (p *progress) start() {
	if p.off {
		close(p.finished)
		return
	}
	go func() {
		defer close(p.finished)
		tick := 200 * time.Millisecond
		if p.terminal {
			tick = time.Second
		}
		ticker := time.NewTicker(tick)
		defer ticker.Stop()
		var nextTenth int64 = 1
		lastLine := time.Now()
		for {
			select {
			case <-p.done:
				if p.terminal {
					p.mu.Lock()
					fmt.Fprint(p.w, "\r\033[K")
					p.mu.Unlock()
				}
				return
			case <-ticker.C:
			}
			sent := p.stats.sent.Load() + p.stats.failed.Load()
			switch {
			case p.terminal:
				p.mu.Lock()
				fmt.Fprintf(p.w, "\r\033[K%s", p.line(sent))
				p.mu.Unlock()
			case p.total > 0:
				if sent*10 >= nextTenth*p.total && nextTenth <= 10 {
					for sent*10 >= nextTenth*p.total {
						nextTenth++
					}
					p.mu.Lock()
					fmt.Fprintf(p.w, "%s\n", p.line(sent))
					p.mu.Unlock()
				}
			case time.Since(lastLine) >= 10*time.Second:
				lastLine = time.Now()
				p.mu.Lock()
				fmt.Fprintf(p.w, "%s\n", p.line(sent))
				p.mu.Unlock()
			}
		}
	}()
}

func (p *progress) line(sent int64) string {
	rate := float64(sent) / time.Since(p.began).Seconds()
	if p.total > 0 {
		return fmt.Sprintf("progress: %d/%d commands %s (%.0f%%), %.0f/s", sent, p.total, p.verb, 100*float64(sent)/float64(p.total), rate)
	}
	return fmt.Sprintf("progress: %d commands %s, %.0f/s", sent, p.verb, rate)
}

func (p *progress) stop() {
	select {
	case <-p.done:
	default:
		close(p.done)
	}
	<-p.finished
}

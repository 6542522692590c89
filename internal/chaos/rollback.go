package chaos

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/redis/go-redis/v9"
)

// rollbackRedis injects FaultRedisRollback: it snapshots redis-server,
// lets the workers go on for a few seconds, puts the snapshot back, waits
// for a worker to notice, then recovers as an operator would: stops the
// workers, runs rebuild-versions, and lets keepWorkers start them again.
func (r *run) rollbackRedis(ctx context.Context, kind string) {
	snapshot := filepath.Join(r.cfg.Dir, "rollback.rdb")
	if err := r.redis.snapshot(ctx, snapshot); err != nil {
		r.logf("cannot snapshot redis-server: %v", err)
		return
	}
	taken := time.Now()
	select {
	case <-ctx.Done():
	case <-time.After(3 * time.Second):
	}
	if err := r.redis.restore(ctx, snapshot); err != nil {
		r.logf("redis-server did not come back from the snapshot: %v", err)
		return
	}
	restored := time.Now()
	detectedBy := ""
	deadline := restored.Add(60 * time.Second)
	for detectedBy == "" && time.Now().Before(deadline) {
		for _, w := range r.live() {
			if log, err := os.ReadFile(w.logPath); err == nil && strings.Contains(string(log), "run 'arbiter rebuild-versions'") {
				detectedBy = w.name
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	detection := "no worker reported it within 60s"
	if detectedBy != "" {
		detection = fmt.Sprintf("%s stopped deciding %s after the restore", detectedBy, time.Since(restored).Round(100*time.Millisecond))
	}
	for _, w := range r.live() {
		w.signal(syscall.SIGCONT)
		w.stop(30 * time.Second)
	}
	began := time.Now()
	out, err := r.rebuild(ctx)
	if err != nil {
		r.logf("rebuild-versions failed: %v\n%s", err, out)
		return
	}
	r.record(kind, "restored a snapshot %s old; %s; workers stopped and rebuild-versions ran in %s: %s",
		restored.Sub(taken).Round(100*time.Millisecond), detection, time.Since(began).Round(100*time.Millisecond), lastLine(out))
}

// rebuild runs 'arbiter rebuild-versions' for the run's topics and group.
func (r *run) rebuild(ctx context.Context) (string, error) {
	rebuildCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
	defer cancel()
	args := append([]string{"rebuild-versions", "--brokers", strings.Join(r.cfg.Brokers, ",")}, r.redisArgs()...)
	out, err := exec.CommandContext(rebuildCtx, r.cfg.Binary, append(args,
		"--commands-topic", r.topics[0], "--events-topic", r.topics[1], "--conflicts-topic", r.topics[2],
		"--group", r.name, "--key-prefix", r.keyPrefix, "--log-format", "json")...).CombinedOutput()
	return string(out), errors.Wrap(err, "rebuild-versions")
}

func lastLine(output string) string {
	lines := strings.Split(strings.TrimSpace(output), "\n")
	return lines[len(lines)-1]
}

// snapshot writes redis-server's data to path (SAVE, then a copy of the
// dump.rdb).
func (s *redisServer) snapshot(ctx context.Context, path string) error {
	client := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", s.port)})
	defer client.Close()
	if err := client.Save(ctx).Err(); err != nil {
		return errors.Wrap(err, "SAVE")
	}
	return copyFile(filepath.Join(s.dir, "dump.rdb"), path)
}

// restore stops redis-server and starts it from the snapshot: Redis 7 does
// not read a dump.rdb when AOF is on, so it starts with AOF off, loads the
// snapshot, and turns AOF on again (which rewrites the AOF from memory).
func (s *redisServer) restore(ctx context.Context, snapshot string) error {
	s.proc.stop(30 * time.Second)
	if err := os.RemoveAll(filepath.Join(s.dir, "appendonlydir")); err != nil {
		return errors.Wrap(err, "remove the AOF")
	}
	if err := copyFile(snapshot, filepath.Join(s.dir, "dump.rdb")); err != nil {
		return err
	}
	if err := s.startWith(ctx, "no"); err != nil {
		return err
	}
	client := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", s.port)})
	defer client.Close()
	if err := client.ConfigSet(ctx, "appendonly", "yes").Err(); err != nil {
		return errors.Wrap(err, "turn the AOF on again")
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		info, err := client.Info(ctx, "persistence").Result()
		if err == nil && strings.Contains(info, "aof_enabled:1") && strings.Contains(info, "aof_rewrite_in_progress:0") &&
			!strings.Contains(info, "aof_rewrite_scheduled:1") {
			return nil
		}
	}
	return errors.New("the AOF rewrite after the restore did not finish in 30s")
}

func copyFile(from, to string) error {
	data, err := os.ReadFile(from)
	if err != nil {
		return errors.Wrapf(err, "read %s", from)
	}
	return errors.Wrapf(os.WriteFile(to, data, 0o644), "write %s", to)
}

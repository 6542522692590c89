#!/usr/bin/env bash
# lint.sh — the static checks of `make test` and `make lint`: gofmt on every
# Go file of the checkout (tracked or new, not ignored), go vet and
# staticcheck (the version pinned in go.mod through internal/tools) on every
# package, once as released and once with the arbiter_faults build tag (the
# fault-injection hooks of the tests and the chaos runner). Runs them all and
# exits non-zero if any complained.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

failed=()

go_files() {
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard -- '*.go'
  else
    find . -name '*.go' -not -path './.stack/*' -print0
  fi
}

echo "lint: gofmt"
unformatted=()
while IFS= read -r -d '' file; do
  # Deleted but still tracked, or test data that is bad Go on purpose.
  [[ -f $file && $file != */testdata/* ]] || continue
  [[ -z "$(gofmt -l "$file")" ]] || unformatted+=("$file")
done < <(go_files)
if ((${#unformatted[@]})); then
  echo "lint: these files are not gofmt-ed (run gofmt -w on them):"
  printf '  %s\n' "${unformatted[@]}"
  failed+=(gofmt)
fi

for tags in "" arbiter_faults; do
  echo "lint: go vet -tags '$tags' ./..."
  go vet -tags "$tags" ./... || failed+=("go vet -tags '$tags'")

  echo "lint: staticcheck -tags '$tags' ./..."
  go run honnef.co/go/tools/cmd/staticcheck -tags "$tags" ./... || failed+=("staticcheck -tags '$tags'")
done

if ((${#failed[@]})); then
  echo "lint: FAILED: ${failed[*]}"
  exit 1
fi
echo "lint: ok"

#!/usr/bin/env bash
# Guard the contract (proto/): `buf lint`, then `buf breaking` against a baseline commit.
#
# The baseline is the commit this change will be judged against:
#   - on a branch: the merge-base with the main branch, so every commit of the branch is checked
#     (comparing with HEAD~1 alone would let a break in an earlier commit of the branch through);
#   - on the main branch itself (merge-base is HEAD): HEAD~1, the previous commit;
#   - a deliberate break: when a commit after that baseline has a line starting with
#     `BREAKING-PROTO:` (followed by why) in its message, the newest such commit becomes the
#     baseline instead: the break it makes is accepted, changes after it are still checked.
# Uncommitted changes in the work tree are always part of what is checked.
#
# Environment:
#   H2K_PROTO_AGAINST=<git ref>  compare with this ref instead (e.g. the PR's target in CI);
#                                `none` skips the breaking check with a line saying so.
#   H2K_PROTO_MAIN=<git ref>     the main branch (default: origin/main, else main).
# With no baseline (first commit, or a shallow clone of depth 1) the check prints a skip line and
# passes; `git fetch --deepen=50` (or a full clone) makes it run.
set -euo pipefail
cd "$(dirname "$0")/.."

BUF=.tools/node_modules/.bin/buf
MARKER="BREAKING-PROTO:"
[ -x "$BUF" ] || { echo "check_proto: $BUF is missing: run make setup" >&2; exit 1; }

"$BUF" lint
echo "check_proto: buf lint ok"

commit_exists() { git rev-parse -q --verify "$1^{commit}" >/dev/null 2>&1; }

# Prints "<ref> <why>" for the baseline, or nothing when there is none.
find_baseline() {
  if [ -n "${H2K_PROTO_AGAINST:-}" ]; then
    echo "$H2K_PROTO_AGAINST H2K_PROTO_AGAINST"
    return
  fi
  local main_ref="${H2K_PROTO_MAIN:-}" ref merge_base=""
  if [ -z "$main_ref" ]; then
    for ref in origin/main main; do
      if commit_exists "$ref"; then main_ref=$ref; break; fi
    done
  fi
  if [ -n "$main_ref" ]; then
    merge_base=$(git merge-base HEAD "$main_ref" 2>/dev/null || true)
  fi
  if [ -n "$merge_base" ] && [ "$merge_base" != "$(git rev-parse HEAD)" ]; then
    echo "$merge_base merge-base-with-$main_ref"
  elif commit_exists HEAD~1; then
    echo "HEAD~1 previous-commit"
  fi
}

read -r base why <<<"$(find_baseline)" || true
if [ "${base:-}" = "none" ]; then
  echo "check_proto: buf breaking SKIPPED: H2K_PROTO_AGAINST=none"
  exit 0
fi
if [ -z "${base:-}" ]; then
  shallow=$(git rev-parse --is-shallow-repository 2>/dev/null || echo false)
  if [ "$shallow" = "true" ]; then
    echo "check_proto: buf breaking SKIPPED: shallow clone without the previous commit" \
      "(git fetch --deepen=50 to check)"
  else
    echo "check_proto: buf breaking SKIPPED: no previous commit to compare with"
  fi
  exit 0
fi
commit_exists "$base" || { echo "check_proto: baseline $base is not a commit here" >&2; exit 1; }

declared=$(git log -1 --format=%h --grep="^$MARKER" "$base..HEAD" 2>/dev/null || true)
if [ -n "$declared" ]; then
  echo "check_proto: commit $declared declares $MARKER $(git log -1 --format=%s "$declared");" \
    "checking changes after it"
  base=$declared
  why="declared-break"
fi

baseline_dir=$(mktemp -d)
trap 'rm -rf "$baseline_dir"' EXIT
if ! git archive "$base" proto 2>/dev/null | tar -x -C "$baseline_dir" 2>/dev/null; then
  echo "check_proto: buf breaking SKIPPED: $base has no proto/"
  exit 0
fi
# The baseline is judged with today's buf.yaml (it may predate it, and the module layout is ours).
cp buf.yaml "$baseline_dir/"
label="$(git rev-parse --short "$base") ($why)"
if "$BUF" breaking --against "$baseline_dir"; then
  echo "check_proto: buf breaking ok against $label"
else
  echo "check_proto: proto/ breaks the contract against $label." >&2
  echo "  Renaming or removing what clients use is not allowed; if this break is agreed with the" >&2
  echo "  teams that use the contract, commit it with a line '$MARKER <why>' in the message." >&2
  exit 1
fi

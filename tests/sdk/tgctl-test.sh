#!/usr/bin/env bash
# tgctl against a real coordinator and node (issue 15 item 7): a fast, clear failure when the
# coordinator is unreachable; host:port endpoints; global options after the subcommand; job id
# at submit and --detach; submit --count (pipelined) and wait of several ids; jobs; op list/pause/resume/limits/drain; node list/drain/undrain/evict;
# errors for unknown names; --help text on every option.
set -uo pipefail
bin=${TG_BUILD_DIR:?TG_BUILD_DIR must name a built TokenGate tree}/bin
src=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d /tmp/tg-tgctl-test.XXXXXX)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$work"' EXIT
failed=0
check() { # NAME CMD...: PASS when CMD exits 0
  local name=$1; shift
  if "$@" >"$work/out" 2>&1; then echo "PASS $name"; else echo "FAIL $name"; sed 's/^/     /' "$work/out" | tail -15; failed=1; fi
}
tgctl="$bin/tgctl"
# Every process below runs with CURVE (docs/security.md): throw-away keys, found via TG_CURVE_DIR.
"$tgctl" keys init --out "$work/keys" >/dev/null || { echo "FAIL tgctl keys init"; exit 1; }
export TG_CURVE_DIR=$work/keys

# --- unreachable coordinator ------------------------------------------------------------------
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
unreachable() {
  local t0=$SECONDS rc=0
  "$tgctl" -c "127.0.0.1:$port" --connect-timeout 1 wait 1 >"$work/u.out" 2>&1 || rc=$?
  cat "$work/u.out"
  [[ $rc == 1 ]] && grep -q "no answer from the coordinator at tcp://127.0.0.1:$port" "$work/u.out" &&
    (( SECONDS - t0 < 30 ))
}
check "unreachable coordinator: exit 1 with a clear error, not a hang" unreachable
check "malformed endpoint: an error, no crash" sh -c "! '$tgctl' -c 'a b' info 2>&1 | grep -q terminate && ! '$tgctl' -c 'a b' info"

# --- a coordinator and a node -----------------------------------------------------------------
"$bin/tokengate-coordinator" --listen tcp://127.0.0.1:0 --ready-file "$work/ready" --log-level warn \
  >"$work/coordinator.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [[ -s $work/ready ]] && break; sleep 0.1; done
ep=$(awk '$1 == "wire" { print $2 }' "$work/ready")
hp=${ep#tcp://}
"$bin/tokengate-node" --coordinator "$ep" --id cli-node --no-pin --enable-test-ops --log-level warn \
  >"$work/node.log" 2>&1 &
pids+=($!)
check "host:port endpoint, global options after the subcommand" "$tgctl" info --wait-nodes 1 -c "$hp" --timeout 30
check "submit --detach prints only the job id" sh -c "'$tgctl' submit --detach '$src/examples/jobs/diamond.json' -c '$hp' >'$work/id' && grep -Eqx '[0-9]+' '$work/id'"
id=$(cat "$work/id")
check "wait on the detached job succeeds" "$tgctl" -c "$hp" wait "$id" --timeout 30
check "submit (waiting) says the job id on stderr at once" sh -c "'$tgctl' -c '$hp' submit '$src/examples/jobs/diamond.json' 2>'$work/err' >/dev/null && grep -q '^job [0-9]* submitted' '$work/err'"
check "submit --count runs the job N times pipelined (one line per job, summary)" sh -c "'$tgctl' -c '$hp' submit --count 50 --window 8 '$src/examples/jobs/diamond.json' >'$work/many' 2>'$work/many.err' && [ \$(grep -Ec '^job [0-9]+ succeeded' '$work/many') = 50 ] && [ \$(grep -Eo '^job [0-9]+' '$work/many' | sort -u | wc -l) = 50 ] && grep -q '^50 jobs: 50 succeeded, 0 failed' '$work/many.err'"
check "submit --count --json prints one JSON object per job" sh -c "'$tgctl' -c '$hp' --json submit -n 5 '$src/examples/jobs/diamond.json' 2>/dev/null | python3 -c 'import json,sys; rows=[json.loads(l) for l in sys.stdin]; assert len(rows)==5 and all(r[\"state\"]==\"succeeded\" for r in rows), rows'"
check "submit --count with --detach is refused" sh -c "! '$tgctl' -c '$hp' submit -n 3 --detach '$src/examples/jobs/diamond.json' 2>'$work/e' && grep -q 'does not combine' '$work/e'"
"$tgctl" -c "$hp" submit --detach "$src/examples/jobs/diamond.json" >"$work/id2"
check "wait of several ids prints each job" sh -c "'$tgctl' -c '$hp' --timeout 30 wait $id \$(cat '$work/id2') >'$work/w2' && [ \$(grep -Ec '^job [0-9]+ succeeded' '$work/w2') = 2 ]"
check "jobs lists the detached job as succeeded" sh -c "'$tgctl' -c '$hp' jobs | grep -Eq '^ *$id +succeeded'"
check "jobs --json is a JSON array" sh -c "'$tgctl' -c '$hp' jobs --json | python3 -c 'import json,sys; assert isinstance(json.load(sys.stdin), list)'"
check "op list shows built-in operations" sh -c "'$tgctl' -c '$hp' op list | grep -q '^leibniz.term '"
check "op pause marks the operation paused" sh -c "'$tgctl' -c '$hp' op pause sleep | grep -q paused"
# A paused op's tokens wait: a sleep job does not finish while paused.
"$tgctl" -c "$hp" submit --detach - >"$work/sleep-id" <<<'{"tokens":[{"op":"sleep","args":[1]}]}'
check "a paused operation's job stays running" sh -c "sleep 1; '$tgctl' -c '$hp' jobs | grep -Eq '^ *$(cat "$work/sleep-id") +running'"
check "op limits sets in-flight and rate limits" sh -c "'$tgctl' -c '$hp' --json op limits sleep --max-in-flight 2 --max-rate 5 | grep -q '\"max_in_flight\":2'"
check "op resume lets the waiting job finish" sh -c "'$tgctl' -c '$hp' op resume sleep >/dev/null && '$tgctl' -c '$hp' --timeout 30 wait $(cat "$work/sleep-id")"
check "op drain answers with a count" sh -c "'$tgctl' -c '$hp' op drain sleep | grep -q 'dropped 0 queued tokens'"
check "op pause of an unknown operation fails" sh -c "! '$tgctl' -c '$hp' op pause no.such.op 2>'$work/e' && grep -q 'unknown operation' '$work/e'"
check "node list shows the node" sh -c "'$tgctl' -c '$hp' node list | grep -Eq '^cli-node +ready'"
check "node drain" sh -c "'$tgctl' -c '$hp' node drain cli-node | grep -Eq '^cli-node +draining'"
check "node undrain" sh -c "'$tgctl' -c '$hp' node undrain cli-node | grep -Eq '^cli-node +ready'"
check "node drain of an unknown node fails" sh -c "! '$tgctl' -c '$hp' node drain nope"
check "node evict" sh -c "'$tgctl' -c '$hp' node evict cli-node | grep -q 'evicted'"

# --- help text for every option ---------------------------------------------------------------
help_complete() { # every option and positional of every (sub)command's --help has a description
  local cmd
  for cmd in "" leibniz submit wait cancel info jobs op "op list" "op pause" "op resume" "op drain" \
      "op limits" node "node list" "node drain" "node undrain" "node evict" model "model train" \
      "model show" journal "journal check" keys "keys generate" "keys init" "keys public"; do
    # shellcheck disable=SC2086
    "$tgctl" $cmd --help | awk '
      /^Subcommands:/ { o = 0; next }
      /^[^ ].*:$/ { o = 1; next }  # Options:, Positionals: and option groups ("CURVE security ...:")
      /^[^ ]/ { o = 0 }
      o {
        if (pending) { if ($0 !~ /^                    +[^ ]/) { print "no help: " pend; bad = 1 } pending = 0 }
        if ($0 ~ /^  [^ ]/ && $0 !~ /^  [^ ].*[^ ]  +[^ ]/) { pending = 1; pend = $0 }
      }
      END { if (pending) { print "no help: " pend; bad = 1 } exit bad }' || { echo "in: tgctl $cmd --help"; return 1; }
  done
}
check "help text for every option and positional of every subcommand" help_complete
exit $failed

#!/usr/bin/env bash
# Runs every ```bash test block of docs/writing-operations.md, in order, as one bash script
# (set -euo pipefail) from the checkout, with HOME set to an empty temporary folder and TG_PORT
# to a free loopback port. Fails if any command fails, or if the page has no such block.
# Then every line of every ```text output block must be a line of the script's stdout, a
# `<word>` in it standing for any run of non-blank characters (ids, times).
#
# The first block builds with the release preset; ctest runs this only from build/release (it
# would otherwise build a second tree), and exits 77 (skipped) elsewhere.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
doc=${1:-$src/docs/writing-operations.md}
if [[ -n "${TG_BUILD_DIR:-}" && "$(cd "$TG_BUILD_DIR" && pwd)" != "$src/build/release" ]]; then
  echo "doc-commands: the page builds build/release; this is $TG_BUILD_DIR: skipped"
  exit 77
fi
work=$(mktemp -d /tmp/tg-doc-test.XXXXXX)
trap '[[ "${TG_KEEP:-0}" == 1 ]] || rm -rf "$work"' EXIT
script=$work/commands.sh
awk '/^```bash test[[:space:]]*$/ { on = 1; n++; print "# --- block " n; next }
     /^```/ { on = 0; next }
     on { print }' "$doc" >"$script"
blocks=$(grep -c '^# --- block ' "$script" || true)
[[ $blocks -gt 0 ]] || { echo "FAIL no \`\`\`bash test blocks in $doc"; exit 1; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$work/home"
echo "doc-commands: $blocks blocks from ${doc#"$src"/}, HOME=$work/home, TG_PORT=$port"
cd "$src"
# Background jobs the page starts are killed if a command fails half way.
if env -i PATH="$PATH" HOME="$work/home" TG_PORT="$port" LANG=C.UTF-8 \
    bash -c 'set -euo pipefail; trap "kill \$(jobs -p) 2>/dev/null || true" EXIT; set -x; source "$1"' \
    bash "$script" >"$work/stdout"; then
  echo "--- stdout of the commands:"; cat "$work/stdout"
  echo "PASS every bash test block of ${doc#"$src"/} ($blocks blocks)"
else
  echo "--- stdout of the commands:"; cat "$work/stdout"
  echo "FAIL a command of ${doc#"$src"/} failed (see the trace above)"
  exit 1
fi
awk '/^```text output[[:space:]]*$/ { on = 1; next } /^```/ { on = 0; next } on { print }' \
  "$doc" >"$work/expected"
[[ -s $work/expected ]] || { echo "FAIL no \`\`\`text output blocks in $doc"; exit 1; }
if python3 - "$work/expected" "$work/stdout" <<'PY'
import re, sys
got = open(sys.argv[2]).read().splitlines()
missing = []
for line in open(sys.argv[1]).read().splitlines():
    parts = re.split(r"<[a-z]+>", line)
    pattern = re.compile(r"\S+".join(re.escape(p) for p in parts) + r"\Z")
    if not any(pattern.match(g) for g in got):
        missing.append(line)
for m in missing:
    print("     not printed: " + m)
sys.exit(1 if missing else 0)
PY
then
  echo "PASS every text output line of ${doc#"$src"/} was printed"
else
  echo "FAIL the page's text output blocks differ from what the commands printed"
  exit 1
fi

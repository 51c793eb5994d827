#!/usr/bin/env bash
# The ctest command of every libFuzzer target (tg_add_fuzzer in tests/fuzz/CMakeLists.txt), made
# so that a CI failure can be diagnosed from the ctest output alone:
#   - the fuzzer's full output goes to <work>/<name>.log; the console gets it without the
#     per-input "NEW" / "REDUCE" / "pulse" lines (a 60 s run writes ~1500 of them, ~200 KB, and
#     ctest cuts a failed test's output at 300 KB, which would drop the crash report at the end;
#     a stack overflow in Boost.Multiprecision alone printed 180 KB): progress lines left out,
#     long lines cut and long stacks shortened;
#   - findings (crash-*, leak-*, oom-*, timeout-*, slow-unit-*) are written to a fresh directory
#     <work>/artifacts/<time>-<pid>/ and, when the run fails, each is printed in base64 with the
#     command that replays it.
# usage: run_fuzzer.sh <fuzzer binary> <work dir> <libFuzzer arguments...>
set -u
bin=$1
work=$2
shift 2
name=$(basename "$bin")
adir="$work/artifacts/$(date -u +%Y%m%dT%H%M%SZ)-$$"
mkdir -p "$adir"
log="$work/$name.log"
echo "run_fuzzer: $bin $* -artifact_prefix=$adir/"
"$bin" "$@" "-artifact_prefix=$adir/" >"$log" 2>&1
rc=$?
progress='^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)[[:space:]]'
# Console form: no progress lines, lines cut at 400 characters (Boost template names make
# frames of 1-2 KB) and at most 40 frames per stack (a stack overflow prints ~250 of them).
grep -vE "$progress" "$log" | awk '
  /^ *#[0-9]+ 0x/ { if (++frames > 40) { skipped++; next } }
  !/^ *#[0-9]+ 0x/ {
    if (skipped) print "    ... " skipped " more frames (full log: '"$log"')"
    frames = 0; skipped = 0
  }
  { print (length($0) > 400 ? substr($0, 1, 400) " ..." : $0) }
  END { if (skipped) print "    ... " skipped " more frames" }'
echo "run_fuzzer: $name exited with $rc; $(grep -cE "$progress" "$log") progress lines left out;" \
  "full log: $log"
grep -E "$progress" "$log" | tail -n 3
if [[ $rc -ne 0 ]]; then
  found=0
  for f in "$adir"/*; do
    [[ -f "$f" ]] || continue
    found=1
    size=$(stat -c %s "$f")
    echo "run_fuzzer: finding $f ($size bytes)"
    if ((size <= 65536)); then
      echo "---- base64 of $(basename "$f") (replay: base64 -d > input; $name input) ----"
      base64 -w 76 "$f"
      echo "---- end ----"
    fi
    echo "run_fuzzer: replay with $bin $f"
  done
  ((found)) || echo "run_fuzzer: no finding was written (killed from outside, or the fuzzer could not start)"
else
  rmdir "$adir" 2>/dev/null
fi
exit $rc

#!/bin/sh
# Prints, one per line, the Debian packages that own the shared libraries loaded by the
# executables under PREFIX/bin. Run in the build stage so the runtime stage installs exactly
# what the binaries link against (no hand-kept list to go stale when a dependency changes).
set -eu
prefix=${1:-/opt/tokengate}
for f in "$prefix"/bin/*; do
  [ -x "$f" ] && ldd "$f" 2>/dev/null || true
done | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u | while read -r lib; do
  # usrmerge: ldd may report /lib/... for a file dpkg registered as /usr/lib/... or vice versa.
  real=$(readlink -f "$lib")
  for p in "$lib" "$real" "/usr$lib" "${lib#/usr}" "/usr$real" "${real#/usr}"; do
    pkg=$(dpkg -S "$p" 2>/dev/null | head -n1 | cut -d: -f1) && [ -n "$pkg" ] && { echo "$pkg"; break; }
  done
done | sort -u

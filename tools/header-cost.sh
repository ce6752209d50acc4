#!/usr/bin/env bash
# Compares the compile cost of a translation unit that includes <multiproc/multiproc.hpp> with one
# that includes <msgpack.hpp> alone (MSGPACK_NO_BOOST, -std=c++20, same flags), at -O0 and -O2.
# The budget is 1.6x: our headers may add little on top of the msgpack-c they must expose.
# Times are CPU seconds (user+sys) of the compiler, median of interleaved runs, so load from other
# processes on the machine disturbs them less than wall-clock time would.
#
#   tools/header-cost.sh [--runs N] [--limit R] [--per-header]
#
# --per-header also times each public header alone and lists the standard headers that ours pull
# in beyond msgpack's, to find what to trim when the ratio is over the budget.
# Exits 1 when a ratio is over the limit. CXX selects the compiler (default g++).
set -euo pipefail

runs=7
limit=1.6
per_header=false
while (($#)); do
  case $1 in
    --runs) runs=$2; shift 2 ;;
    --limit) limit=$2; shift 2 ;;
    --per-header) per_header=true; shift ;;
    *) echo "usage: $0 [--runs N] [--limit R] [--per-header]" >&2; exit 2 ;;
  esac
done

repo=$(cd "$(dirname "$0")/.." && pwd)
cxx=${CXX:-g++}
work=$(mktemp -d --tmpdir multiproc-header-cost-XXXXXX)
trap 'rm -rf "$work"' EXIT

flags=(-std=c++20 -DMSGPACK_NO_BOOST -I"$repo/framework/include" -c -o /dev/null)
echo '#include <msgpack.hpp>' >"$work/msgpack.cpp"
echo '#include <multiproc/multiproc.hpp>' >"$work/multiproc.cpp"

# Prints the compiler's CPU seconds for one compile of $1 at optimization level $2.
cpu_seconds() {
  local TIMEFORMAT='%3U %3S' times
  times=$({ time "$cxx" "${flags[@]}" "$2" "$1" >/dev/null 2>&1; } 2>&1)
  awk '{ printf "%.3f\n", $1 + $2 }' <<<"$times"
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Prints the median CPU seconds of each file given, measured in interleaved rounds at level $1.
medians() {
  local level=$1 round file
  shift
  for ((round = 0; round < runs; round++)); do
    for file in "$@"; do echo "$file $(cpu_seconds "$file" "$level")"; done
  done >"$work/samples"
  for file in "$@"; do awk -v f="$file" '$1 == f { print $2 }' "$work/samples" | median; done
}

over_budget=false
for level in -O0 -O2; do
  read -r -d '' base ours < <(medians "$level" "$work/msgpack.cpp" "$work/multiproc.cpp") || true
  ratio=$(awk -v a="$ours" -v b="$base" 'BEGIN { printf "%.2f", a / b }')
  verdict=ok
  if awk -v r="$ratio" -v l="$limit" 'BEGIN { exit !(r > l) }'; then
    verdict="OVER the ${limit}x budget"
    over_budget=true
  fi
  printf '%s  msgpack.hpp %6.2fs  multiproc.hpp %6.2fs  ratio %sx  %s\n' "$level" "$base" "$ours" "$ratio" "$verdict"
done

if $per_header; then
  echo "each public header alone at -O0 (median of $runs):"
  headers=()
  for header in "$repo"/framework/include/multiproc/*.hpp; do
    name=$(basename "$header" .hpp)
    echo "#include <multiproc/$name.hpp>" >"$work/only_$name.cpp"
    headers+=("$work/only_$name.cpp")
  done
  mapfile -t times < <(medians -O0 "$work/msgpack.cpp" "${headers[@]}")
  for i in "${!headers[@]}"; do
    printf '  %-20s %6.2fs  (%sx msgpack.hpp)\n' "$(basename "${headers[i]}" .cpp | sed 's/^only_//').hpp" \
      "${times[i + 1]}" "$(awk -v a="${times[i + 1]}" -v b="${times[0]}" 'BEGIN { printf "%.2f", a / b }')"
  done
  # Standard headers included directly by our headers, not reached through msgpack's.
  included() { "$cxx" "${flags[@]}" -H "$1" 2>&1 >/dev/null | sed -n 's/^\.* //p' | grep -v "$repo" | sort -u; }
  echo "standard headers multiproc.hpp adds to msgpack.hpp's:"
  comm -13 <(included "$work/msgpack.cpp") <(included "$work/multiproc.cpp") |
    grep -E '/c\+\+/[0-9]+/[a-z_]+$' | sed 's|.*/||' | tr '\n' ' '
  echo
fi

! $over_budget

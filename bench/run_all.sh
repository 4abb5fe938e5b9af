#!/usr/bin/env bash
# Run every benchmark; each writes its own section of bench/RESULTS.md (with the machine, the
# versions, the load at its start and its ratios), leaving the other sections alone.
#
#   bash bench/run_all.sh                  # everything (hours on a 2-core CPU; the quickstart alone ~15 min)
#   bash bench/run_all.sh --quick          # smoke run of each script; writes nothing
#   bash bench/run_all.sh --cold-cache     # the quickstart from empty caches (passed to bench/quickstart.py)
#   bash bench/run_all.sh generation eval  # only these (names of bench/NAME.py)
#   PYTHON=/path/to/python bash bench/run_all.sh
#
# Run them on a quiet machine: the rates are throughputs, and another job's load lowers them. A
# bench exits 1 when it missed its target; the others still run, and the list is printed at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
ALL=(generation best_of_k critique label eval training profile_trainers quickstart)  # bench/report.py is their shared helper
flags=(); qs_flags=(); only=()
for arg in "$@"; do
  case "$arg" in
    --quick) flags+=(--quick); qs_flags+=(--quick) ;;
    --cold-cache) qs_flags+=(--cold-cache) ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    -*) echo "run_all.sh: unknown option $arg (--quick, --cold-cache)" >&2; exit 2 ;;
    *) only+=("$arg") ;;
  esac
done
[[ ${#only[@]} -gt 0 ]] && ALL=("${only[@]}")
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
missed=(); failed=(); ran=0
for name in "${ALL[@]}"; do
  script=bench/$name.py
  if [[ ! -f $script ]]; then echo "== $script: not here, skipped" >&2; continue; fi
  if [[ $name == quickstart ]]; then args=("${qs_flags[@]}"); else args=("${flags[@]}"); fi
  echo "== $script ${args[*]} (load average $(cut -d' ' -f1 /proc/loadavg))" >&2
  start=$SECONDS
  "$PY" "$script" "${args[@]}"
  code=$?
  ran=$((ran + 1))
  echo "== $script: exit $code after $((SECONDS - start)) s" >&2
  case $code in 0) ;; 1) missed+=("$name") ;; *) failed+=("$name") ;; esac
done
echo "ran $ran bench(es); exit 1 (a missed target, or an uncaught error: see above): ${missed[*]:-none}; other failures: ${failed[*]:-none}" >&2
[[ ${#failed[@]} -eq 0 && ${#missed[@]} -eq 0 ]]

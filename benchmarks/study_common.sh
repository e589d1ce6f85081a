# Sourced by the study runners (study_lr_search.sh, study_equal_compute.sh, study_parity.sh,
# study_repro.sh, study_scale.sh).
#
# use_pinned_code: with PIN_SITE set (a `pip install --target` of a pinned worktree), puts it
# first on PYTHONPATH and checks, from / so that the current folder's effssl_plugin/ cannot
# stand in (as it cannot for study.py), that effssl_plugin and its configs import from there;
# then prints the commit of the current folder (whose benchmarks/study.py runs). Returns
# non-zero when they do not.
use_pinned_code() {
    if [ -n "${PIN_SITE:-}" ]; then
        export PYTHONPATH="$PIN_SITE${PYTHONPATH:+:$PYTHONPATH}"
    fi
    (cd / && python - "${PIN_SITE:-}") <<'PY' || return 1
import importlib.util, os, sys
import effssl_plugin
pkg = os.path.realpath(os.path.dirname(effssl_plugin.__file__))
configs = importlib.util.find_spec("effssl_plugin.configs").submodule_search_locations[0]
configs = os.path.dirname(os.path.realpath(os.path.join(configs, "effssl.yaml")))
print(f"effssl_plugin from {pkg}; configs from {configs}", flush=True)
site = sys.argv[1]
if site and not all(p.startswith(os.path.realpath(site) + os.sep) for p in (pkg, configs)):
    sys.exit(f"PIN_SITE={site} is set but effssl_plugin imports from {pkg}")
PY
    git -C "$PWD" log -1 --format="study code: commit %H (%s)"  # study.py runs from here
}

# measure_step_cost <out> <csv> <step_cost.py options...>: a protocol's step cost, measured
# once (only while <csv> is missing) by benchmarks/step_cost.py with these options into <out>,
# ON AN OTHERWISE IDLE MACHINE: it refuses unless IDLE=1 says the machine is idle. The start
# (date, commit), the load before and after, and step_cost.py's output go to
# <out>/step_cost.log (the reports cite its conditions). Returns non-zero when <csv> is still
# missing.
measure_step_cost() {
    local out=$1 csv=$2
    shift 2
    [ -f "$csv" ] && return 0
    if [ "${IDLE:-0}" != 1 ]; then
        echo "no step-cost CSV at $csv: the protocol measures it on an otherwise idle"
        echo "machine before its first run. Stop every other job, then start again with IDLE=1."
        return 1
    fi
    mkdir -p "$out"
    {
        echo "$(date '+%F %T') step cost, commit $(git -C "$(dirname "$0")" rev-parse HEAD)"
        echo "load before: $(cat /proc/loadavg), $(nproc --all) cpus, OMP_NUM_THREADS=${OMP_NUM_THREADS:-}"
    } >> "$out/step_cost.log"
    python benchmarks/step_cost.py "$@" --out "$out" 2>&1 | tee -a "$out/step_cost.log" || return 1
    echo "load after: $(cat /proc/loadavg)" >> "$out/step_cost.log"
    [ -f "$csv" ] || return 1
    echo "step cost measured: commit $csv and $out/step_cost.log (the protocol cites it)"
}

# Sourced by the study runners (study_lr_search.sh, study_equal_compute.sh, study_parity.sh,
# study_repro.sh).
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

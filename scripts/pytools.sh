# shellcheck shell=bash
# Sourced by the validation scripts: a virtualenv of pinned Python tools from PyPI.
#   PYTOOLS            the virtualenv (default ~/.cache/vexil/pytools, or $VEXIL_PYTOOLS)
#   pytools_install PKG==VERSION...   installs what is not there yet (quietly; errors are shown)
PYTOOLS="${VEXIL_PYTOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/vexil/pytools}"

pytools_install() {
    if [ ! -x "$PYTOOLS/bin/python" ]; then
        command -v python3 >/dev/null 2>&1 || {
            echo "pytools: python3 is needed (apt-get install python3 python3-venv)" >&2
            return 1
        }
        echo "pytools: creating $PYTOOLS"
        python3 -m venv "$PYTOOLS"
    fi
    local missing=()
    local spec
    for spec in "$@"; do
        local name="${spec%%==*}" want="${spec#*==}" have
        have="$("$PYTOOLS/bin/python" -m pip show "$name" 2>/dev/null | sed -n "s/^Version: //p" || true)"
        [ "$have" = "$want" ] || missing+=("$spec")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "pytools: installing ${missing[*]}"
        "$PYTOOLS/bin/python" -m pip install --quiet --disable-pip-version-check "${missing[@]}"
    fi
}

# Sourced by the check scripts: `ensure_venv DIR REQUIREMENTS` creates the Python venv DIR from
# the pinned REQUIREMENTS file the first time (Python is for checks and fixtures, never for
# training; each check keeps its own venv so their pins cannot clash).
ensure_venv() {
    if [ ! -x "$1/bin/python" ]; then
        python3 -m venv "$1"
        "$1/bin/pip" install -q --disable-pip-version-check -r "$2"
    fi
}

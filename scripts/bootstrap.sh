# Shared by ./run and ./test: find Python 3.11+, make .venv, install kanshi into it.
# Sourced, not executed. Everything it installs stays inside this folder, except
# Debian packages, which it installs only when run as root and only if missing.

kanshi_python() {
    local candidate
    for candidate in python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
           "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    echo "kanshi needs Python 3.11 or newer (Debian: apt-get install python3)" >&2
    return 1
}

# Install Debian packages that are missing (root only; otherwise say what is missing).
kanshi_debs() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "kanshi: not installing ${missing[*]} (needs root and apt-get); tests that need them will skip" >&2
        return 0
    fi
    echo "kanshi: installing Debian packages: ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 || {
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    }
}

# kanshi_venv [EXTRAS]: .venv with kanshi installed (editable), re-installed when
# pyproject.toml changes or EXTRAS were not installed yet (./run after ./test
# does not reinstall: the test install includes everything ./run needs).
kanshi_venv() {
    local extras="${1:-}" python stamp want have had
    python="$(kanshi_python)" || return 1
    if ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        rm -rf .venv
        if ! "$python" -m venv .venv 2>/dev/null; then
            rm -rf .venv
            kanshi_debs python3-venv
            "$python" -m venv .venv || {
                echo "kanshi: cannot create a virtual environment; install python3-venv" >&2
                return 1
            }
        fi
    fi
    stamp=".venv/.kanshi-installed"
    want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
    have="$(head -n 1 "$stamp" 2>/dev/null || true)"
    had="$(sed -n 2p "$stamp" 2>/dev/null || true)"
    if [ "$have" = "$want" ] && { [ -z "$extras" ] || [ "$had" = "$extras" ]; }; then
        return 0
    fi
    extras="${extras:-$had}"  # a plain ./run keeps the test extras ./test installed
    echo "kanshi: installing into .venv (first run takes a minute)…" >&2
    if ! { .venv/bin/python -m pip install --disable-pip-version-check --upgrade pip &&
           .venv/bin/python -m pip install --disable-pip-version-check \
               -e ".${extras:+[$extras]}"; } > .venv/pip-install.log 2>&1; then
        tail -n 30 .venv/pip-install.log >&2
        echo "kanshi: installing failed; the whole log is in .venv/pip-install.log" >&2
        return 1
    fi
    printf '%s\n%s\n' "$want" "$extras" > "$stamp"
}

#!/usr/bin/env bash
# Sourced by the test scripts: `python_venv DIR REQUIREMENTS` makes the virtual environment DIR
# with the packages of REQUIREMENTS (from PyPI), again whenever that file changes.
python_venv() {
    local venv="$1" requirements="$2"
    if [ ! -x "$venv/bin/python" ] || ! cmp -s "$requirements" "$venv/requirements.txt"; then
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
        cp "$requirements" "$venv/requirements.txt"
    fi
}

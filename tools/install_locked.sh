#!/usr/bin/env bash
# Installs sa_train into a virtual environment from a lock file, the same way every time:
#   tools/install_locked.sh VENV LOCK
# Every package comes at the exact version the lock names (--no-deps: pip resolves nothing).
# VENV may also be an existing Python installation (the cluster image's), which is used as it is.
# DeepSpeed is built after torch, without build isolation; DS_BUILD_ENV (default: the CPU
# shared-memory communication op prebuilt, otherwise every fresh CPU process JIT-compiles it for
# about a minute) sets its build options; GPU images pass it empty.
# The last step imports the whole stack in a fresh process, so a broken install fails here, with
# the package named, and not in the middle of a training run.
set -euo pipefail
venv=$1
lock=$2
python=${PYTHON:-python3.11}

# pip's own chatter about index locations configured on this machine is not for the user.
quiet() { "$@" 2>&1 | sed -e '/is ignored: it is neither a file nor a directory/d' -e '/Running pip as the .root. user/d'; }

if [ ! -x "$venv/bin/python" ]; then
  echo "creating $venv with $($python --version)"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)

echo "installing the locked stack from $lock (first time: about 5-9 minutes, torch is large)"
deepspeed_pin=$(grep -E '^deepspeed==' "$lock" | sed -e 's/[[:space:]]*#.*//')
quiet "${pip[@]}" install --no-deps -r <(grep -vE '^deepspeed==' "$lock")
echo "building $deepspeed_pin against the installed torch"
# shellcheck disable=SC2086 # DS_BUILD_ENV is a list of VAR=value words
quiet env ${DS_BUILD_ENV-DS_ACCELERATOR=cpu DS_BUILD_SHM_COMM=1} "${pip[@]}" install --no-deps --no-build-isolation "$deepspeed_pin"
quiet "${pip[@]}" install --no-deps --no-build-isolation -e .
if [ -f "$venv/pyvenv.cfg" ]; then
  quiet "${pip[@]}" check  # our own environment must be consistent
else
  quiet "${pip[@]}" check || echo "warning: pip check found the conflicts above in $venv (packages outside the lock)"
fi
"$venv/bin/python" -m sa_train.cli.stack_check

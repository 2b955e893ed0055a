# Sourced by the other scripts: where the project's Python virtualenv lives.
# It sits outside the checkout (it is large, and fresh clones reuse it), keyed by the
# content of requirements.txt so that a change of requirements makes a new one.
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_req_hash="$(sha256sum "$_root/requirements.txt" | cut -c1-12)"
export PIPE_VENV="${PIPE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/pipe/venv-$_req_hash}"
export PATH="$PIPE_VENV/bin:$PATH"
# tch builds against the libtorch that the virtualenv's torch package ships.
export LIBTORCH_USE_PYTORCH=1

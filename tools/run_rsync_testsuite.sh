#!/bin/sh
# Run rsync's own test suite (runtests.py) with netsync standing in as the
# local rsync (--rsync-bin) and a freshly built C rsync as the peer
# (--rsync-bin2, used for the daemon side and remote-shell --rsync-path).
#
# Usage: tools/run_rsync_testsuite.sh [options] RSYNC_SOURCE_TREE [-- RUNTESTS_ARGS...]
#
#   RSYNC_SOURCE_TREE   an unpacked rsync source tree you supply (3.5.x; needs
#                       runtests.py and testsuite/).  Nothing is downloaded.
#   -b, --build-dir DIR build here instead of a fresh temp dir (reused if it
#                       already holds a configured build)
#   -j, --jobs N        tests run in parallel (default 2)
#   -p, --peer PATH     peer rsync for --rsync-bin2 (default: the rsync built
#                       from the tree)
#   -n, --netsync CMD   command that runs netsync (default: the python that can
#                       "import netsync", as "PYTHON -m netsync"; else `netsync`)
#   -r, --results FILE  also write "<test> <class> <outcome>" lines to FILE
#   -s, --swap          netsync as the peer instead: --rsync-bin is the C rsync
#                       (the client), --rsync-bin2 netsync (the daemon and the
#                       --rsync-path server); add `-- --use-tcp` for real
#                       loopback daemons
#   -k, --keep          keep the build dir (default: removed unless -b given)
#   Anything after "--" goes to runtests.py (test names/globs, --race-timeout,
#   --timeout, --preserve-scratch, ...).
#
# Builds need a C compiler, make, autoconf/automake (only if the tree has no
# generated configure.sh), and libpopt; optional libraries that are missing
# are disabled automatically.
set -eu

die() { echo "run_rsync_testsuite: $*" >&2; exit 2; }

build_dir=
jobs=2
peer=
netsync_cmd=
results=
keep=no
swap=no
src=
while [ $# -gt 0 ]; do
    case $1 in
        -b|--build-dir) build_dir=$2; keep=yes; shift 2 ;;
        -j|--jobs) jobs=$2; shift 2 ;;
        -p|--peer) peer=$2; shift 2 ;;
        -n|--netsync) netsync_cmd=$2; shift 2 ;;
        -r|--results) results=$2; shift 2 ;;
        -k|--keep) keep=yes; shift ;;
        -s|--swap) swap=yes; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        --) shift; break ;;
        -*) die "unknown option $1" ;;
        *) [ -z "$src" ] || die "only one source tree may be given"; src=$1; shift ;;
    esac
done
[ -n "$src" ] || die "usage: $0 [options] RSYNC_SOURCE_TREE [-- RUNTESTS_ARGS...]"
src_arg=$src
src=$(cd "$src" 2>/dev/null && pwd) || die "no such directory: $src_arg"
[ -f "$src/runtests.py" ] && [ -d "$src/testsuite" ] \
    || die "$src has no runtests.py/testsuite: not an rsync >= 3.5 source tree"

if [ -z "$build_dir" ]; then
    build_dir=$(mktemp -d "${TMPDIR:-/tmp}/netsync-rsync-suite.XXXXXX")
fi
mkdir -p "$build_dir"
build_dir=$(cd "$build_dir" && pwd)
case $build_dir/ in "$src"/*) die "build dir must be outside the source tree" ;; esac
cleanup() { [ "$keep" = yes ] || rm -rf "$build_dir"; }
trap cleanup EXIT

log=$build_dir/netsync-logs
mkdir -p "$log"

# --- build rsync's test helpers (and rsync itself, the peer) out of tree ----
tree=$build_dir/tree
if [ ! -f "$tree/config.status" ]; then
    echo "== copying $src to $tree"
    rm -rf "$tree"
    mkdir -p "$tree"
    (cd "$src" && tar cf - --exclude=.git --exclude=testtmp .) | (cd "$tree" && tar xf -)
    echo "== configuring (log: $log/configure.log)"
    (
        cd "$tree"
        # Try the full feature set first, then fall back to the minimal one so
        # a machine without the optional -dev packages still builds the helpers.
        ./configure --disable-md2man >"$log/configure.log" 2>&1 \
        || ./configure --disable-md2man --disable-openssl --disable-xxhash \
               --disable-zstd --disable-lz4 >>"$log/configure.log" 2>&1
    ) || die "configure failed; see $log/configure.log (the tree may need autoconf/automake and libpopt-dev)"
fi
echo "== building test helpers (log: $log/make.log)"
ncpu=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)
(cd "$tree" && make -j"$ncpu" check-progs >"$log/make.log" 2>&1) \
    || die "make check-progs failed; see $log/make.log"

# --- the netsync wrapper runtests.py will call as "rsync" -------------------
if [ -z "$netsync_cmd" ]; then
    for py in python3 python; do
        pyexe=$(command -v "$py" 2>/dev/null) || continue
        if "$pyexe" -c 'import netsync' 2>/dev/null; then
            # Resolve pyenv-style shims to the real interpreter: the suite runs
            # with its own HOME and PATH, where a shim may not resolve.
            pyexe=$("$pyexe" -c 'import sys; print(sys.executable)')
            netsync_cmd="$pyexe -m netsync"
            break
        fi
    done
fi
if [ -z "$netsync_cmd" ]; then
    netsync_cmd=$(command -v netsync 2>/dev/null) || die "netsync is neither importable nor on PATH"
fi
wrapper=$build_dir/netsync-as-rsync
cat >"$wrapper" <<EOF
#!/bin/sh
exec $netsync_cmd "\$@"
EOF
chmod 755 "$wrapper"
"$wrapper" --version >/dev/null || die "'$netsync_cmd --version' failed"
[ -n "$peer" ] || peer=$tree/rsync

# --- run --------------------------------------------------------------------
bin=$wrapper bin2=$peer
if [ "$swap" = yes ]; then
    bin=$peer bin2=$wrapper
    echo "== running runtests.py: --rsync-bin=$peer, --rsync-bin2=netsync ($netsync_cmd)"
else
    echo "== running runtests.py: --rsync-bin=netsync ($netsync_cmd), --rsync-bin2=$peer"
fi
runlog=$log/runtests.log
set +e
(cd "$tree" && scratchbase="$build_dir" python3 ./runtests.py \
    --rsync-bin="$bin" --rsync-bin2="$bin2" -j "$jobs" "$@") >"$runlog" 2>&1
rc=$?
set -e

# --- summary ----------------------------------------------------------------
# A test is "local" when its source never reaches for a daemon or a remote
# shell (the same tokens runtests.py --daemon-tests-only looks for, plus the
# remote-shell helpers); those need netsync's remote mode.
classify() {
    f=$tree/testsuite/$1_test.py
    if grep -qE 'USE_TCP|require_tcp|start_test_daemon|start_rsyncd|claim_ports|claim_free_port|setup_chroot_inner|stdio_daemon|rsync_proto|DaemonClient|rsync://|--daemon|rsyncd' "$f"; then
        echo daemon
    elif grep -qE 'lsh|rsh_cmd|rsync_path_arg|--rsync-path|RSYNC_RSH|localhost:|lh:|RSYNC_PEER|rrsync|--server' "$f"; then
        echo remote-shell
    else
        echo local
    fi
}
table=$log/results.txt
: >"$table"
grep -E '^(PASS|FAIL|SKIP|XFAIL) +[^ ]+' "$runlog" | while read -r outcome name _; do
    [ -f "$tree/testsuite/${name}_test.py" ] || continue
    echo "$name $(classify "$name") $(echo "$outcome" | tr 'A-Z' 'a-z')"
done | sort >"$table"
[ -z "$results" ] || cp "$table" "$results"

echo
echo "== results by class (class: pass fail skip xfail)"
for class in local remote-shell daemon; do
    awk -v c="$class" '$2 == c { n[$3]++ }
        END { printf "  %-13s %4d pass %4d fail %4d skip %4d xfail\n", c ":",
              n["pass"], n["fail"], n["skip"], n["xfail"] }' "$table"
done
awk '{ n[$3]++ } END { printf "  %-13s %4d pass %4d fail %4d skip %4d xfail (%d tests)\n",
     "total:", n["pass"], n["fail"], n["skip"], n["xfail"], NR }' "$table"
echo
echo "== failing tests"
awk '$3 == "fail" { print "  " $1 " (" $2 ")" }' "$table"
echo
echo "full log: $runlog (kept only with -k or -b)"
[ "$keep" = yes ] || echo "(pass -k to keep $build_dir, including per-test scratch dirs of failures)"
exit "$rc"

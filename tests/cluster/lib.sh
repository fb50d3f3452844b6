# shellcheck shell=bash
# Simulated hosts for the cluster tests; sourced by each test script.
#
#   cluster_up K        K hosts h0..h(K-1): network namespaces on one bridge,
#                       10.77.0.(i+1)/24 on each host's eth0, and a private
#                       disk per host seen at $DROPK_CLUSTER_DIR/local.
#   cluster_mpirun ...  mpirun on host 0 over all hosts (one slot each, in
#                       $DROPK_CLUSTER_DIR/hostfile), Open MPI's TCP
#                       transport only, started on the others by agent.sh.
#   cluster_mpirun_args the mpirun options for that, less the hostfile.
#   host_link I up|down cut or restore host I's link.
#   cluster_down        removes everything (installed as an EXIT trap).
#
# Names carry the test's PID, so tests running in parallel do not collide.
# Without the rights to make namespaces the test exits 77 (ctest: skipped),
# saying why.

CLUSTER_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export DROPK_CLUSTER_ID="dk$(printf %x $$)"
export DROPK_CLUSTER_DIR=$(mktemp -d /tmp/dropk-cluster.XXXXXX)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_WAIT_POLICY=PASSIVE
CLUSTER_K=0
SUBNET=10.77.0.0/24

host_addr() { echo "10.77.0.$(($1 + 1))"; }

cluster_down() {
  set +e
  # Processes still running in a host's namespace (a failed test) go first.
  for i in $(seq 0 $((CLUSTER_K - 1))); do
    for pid in $(ip netns pids "${DROPK_CLUSTER_ID}h$i" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
    ip netns del "${DROPK_CLUSTER_ID}h$i" 2>/dev/null
    ip link del "${DROPK_CLUSTER_ID}v$i" 2>/dev/null
  done
  ip link del "${DROPK_CLUSTER_ID}br" 2>/dev/null
  [ -n "${KEEP:-}" ] || rm -rf "$DROPK_CLUSTER_DIR"
}

cluster_skip() {
  echo "SKIP: $1" >&2
  [ -n "${KEEP:-}" ] || rm -rf "$DROPK_CLUSTER_DIR"
  exit 77
}

cluster_up() {
  trap cluster_down EXIT
  trap 'exit 1' INT TERM
  command -v mpirun >/dev/null || cluster_skip "mpirun not found"
  command -v python3 >/dev/null || cluster_skip "python3 not found (tools/setup.sh installs it)"
  ip link add "${DROPK_CLUSTER_ID}br" type bridge 2>/dev/null ||
    cluster_skip "cannot create a bridge (needs root or CAP_NET_ADMIN)"
  ip link set "${DROPK_CLUSTER_ID}br" up
  mkdir -p "$DROPK_CLUSTER_DIR/local" "$DROPK_CLUSTER_DIR/shared"
  : >"$DROPK_CLUSTER_DIR/hostfile"
  for i in $(seq 0 $(($1 - 1))); do
    ns="${DROPK_CLUSTER_ID}h$i" veth="${DROPK_CLUSTER_ID}v$i"
    ip netns add "$ns" || cluster_skip "cannot create network namespace $ns"
    CLUSTER_K=$((i + 1))
    ip link add "$veth" type veth peer name "${veth}p"
    ip link set "${veth}p" netns "$ns"
    ip link set "$veth" master "${DROPK_CLUSTER_ID}br" up
    ip -n "$ns" link set "${veth}p" name eth0
    ip -n "$ns" addr add "$(host_addr "$i")/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    mkdir -p "$DROPK_CLUSTER_DIR/disk/h$i"
    echo "$(host_addr "$i") slots=1" >>"$DROPK_CLUSTER_DIR/hostfile"
  done
  # The mount namespace of a host must work too (it needs CAP_SYS_ADMIN).
  "$CLUSTER_HERE/on_host.sh" 0 true 2>/dev/null || cluster_skip "cannot bind-mount a host's disk"
}

# Milliseconds since the epoch, and a millisecond span as seconds.
now_ms() { echo $(($(date +%s%N) / 1000000)); }
seconds() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }

host_link() { ip link set "${DROPK_CLUSTER_ID}v$1" "$2"; }

# The mpirun options that keep Open MPI on the simulated hosts' network, and
# make mpirun notice a lost host's daemon (TCP keepalive on its control
# connections: no answer to 3 probes 5 s apart, after 10 s idle) so that it
# ends the job instead of waiting for that daemon for good. dropk-train's
# own report (collective timeout, --comm_timeout_s=5 in the tests, plus a
# 2 s probe) usually comes first: once the connection has been idle, a probe
# goes out every 5 s, so detection takes 10 to 15 s after a cut.
cluster_mpirun_args() {
  echo --mca plm_rsh_agent "$CLUSTER_HERE/agent.sh" --mca plm_rsh_no_tree_spawn 1 \
    --mca btl tcp,self --mca btl_tcp_if_include "$SUBNET" --mca oob_tcp_if_include "$SUBNET" \
    --mca oob_tcp_keepalive_time 10 --mca oob_tcp_keepalive_intvl 5 --mca oob_tcp_keepalive_probes 3
}

cluster_mpirun() {
  # shellcheck disable=SC2046
  "$CLUSTER_HERE/on_host.sh" 0 mpirun --hostfile "$DROPK_CLUSTER_DIR/hostfile" $(cluster_mpirun_args) "$@"
}

# Relative difference of two `dropk ckpt export` files' parameters,
# ||a - b|| / ||b|| (L2 over all of them). Prints it and the largest single
# difference; exit 1 above $3 (default 1e-5).
params_differ_by() {
  python3 - "$1" "$2" "${3:-1e-5}" <<'PY'
import array, struct, sys
def header_end(path):
    raw = open(path, 'rb').read(16)
    return 16 + struct.unpack_from('<Q', raw, 8)[0]
# Same-shaped models lay their tensors out alike; the headers (step, CRCs)
# may differ in length, and what follows them up to the tensors is zeros.
start = (max(header_end(p) for p in sys.argv[1:3]) + 3) // 4 * 4
def load(path):
    raw = open(path, 'rb').read()
    return array.array('f', raw[start:len(raw) // 4 * 4])
a, b = load(sys.argv[1]), load(sys.argv[2])
if len(a) != len(b):
    sys.exit(f'{sys.argv[1]} and {sys.argv[2]} hold different models')
norm = sum(y * y for y in b) ** 0.5 or 1.0
diff = sum((x - y) ** 2 for x, y in zip(a, b)) ** 0.5 / norm
worst = max(abs(x - y) for x, y in zip(a, b)) / (max(abs(y) for y in b) or 1.0)
print(f'relative parameter difference {diff:.3g} (L2; largest element difference '
      f'{worst:.3g} of the largest parameter; {len(a)} floats)')
sys.exit(0 if diff <= float(sys.argv[3]) else 1)
PY
}

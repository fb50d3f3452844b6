#!/bin/sh
# on_host.sh I COMMAND...: runs COMMAND on simulated host I of the cluster
# that lib.sh made (DROPK_CLUSTER_ID, DROPK_CLUSTER_DIR in the environment):
# in the host's network namespace, in a fresh mount namespace (`ip netns
# exec` makes one, slave to the root) where the host's own disk directory
# is bind-mounted over $DROPK_CLUSTER_DIR/local. Every host therefore sees
# its own files under the same path, as separate machines would.
set -e
i=$1
shift
exec ip netns exec "${DROPK_CLUSTER_ID}h$i" sh -c \
  'mount --bind "$1" "$2" && shift 2 && exec "$@"' \
  sh "$DROPK_CLUSTER_DIR/disk/h$i" "$DROPK_CLUSTER_DIR/local" "$@"

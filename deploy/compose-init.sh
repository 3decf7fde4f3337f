#!/bin/sh
# One-shot set-up for deploy/compose.yaml (runs in the meshpay image, writes the shared volume):
# a password, one key and config per peer, a funded "treasury" wallet account, and a genesis
# whose committee is those peers. Does nothing when the volume already holds a genesis, so the
# network keeps its identity across `compose down` / `up` (remove the volumes to start over).
set -eu
cd "${MESHPAY_SETUP_DIR:-/setup}"
if [ -e genesis.json ]; then
    echo "compose-init: $(pwd) already holds a genesis; keeping it"
    exit 0
fi
peers="${MESHPAY_PEERS:-4}"
umask 077
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > password
members=""
i=0
while [ "$i" -lt "$peers" ]; do
    # (no --genesis: it does not exist yet; the peers read it from the shared volume, deploy/peer.toml)
    peer init "peer$i" --password-file password --json > /dev/null
    members="$members --member $(peer id --config "peer$i/peer.toml")"
    i=$((i + 1))
done
wallet new treasury --wallet-dir wallet --password-file password --json > /dev/null
treasury="$(wallet address treasury --wallet-dir wallet)"
# shellcheck disable=SC2086  # $members is a list of options
peer genesis create --name "${MESHPAY_NETWORK_NAME:-meshpay-compose}" $members \
    --replication "${MESHPAY_REPLICATION:-4}" --quorum "${MESHPAY_QUORUM:-3}" \
    --alloc "$treasury=${MESHPAY_SUPPLY:-1000000}" --out genesis.json
i=0
while [ "$i" -lt "$peers" ]; do
    cp genesis.json "peer$i/genesis.json"  # where each peer's own peer.toml looks for it
    i=$((i + 1))
done
echo "compose-init: $peers peers; treasury account $treasury"

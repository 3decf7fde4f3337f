#!/bin/sh
# Container entrypoint for `peer run`.
#
# - Key: /keys/peer.key, or, when a StatefulSet mounts every peer's key into one secret,
#   /keys/peer-<ordinal>.key where <ordinal> is the number at the end of the pod's hostname.
# - Advertise address: MESHPAY_NETWORK__ADVERTISE_HOST if set; otherwise
#   <hostname>.<MESHPAY_PEER_DOMAIN> when MESHPAY_PEER_DOMAIN is set (the StatefulSet's headless
#   service), otherwise the hostname (compose service names resolve on the compose network).
set -eu

config="${MESHPAY_CONFIG:-/etc/meshpay/peer.toml}"
host="$(hostname)"

if [ -z "${MESHPAY_KEY_FILE:-}" ] && [ ! -e /keys/peer.key ]; then
    ordinal="${host##*-}"
    case "$ordinal" in
        ''|*[!0-9]*) echo "entrypoint: no /keys/peer.key and hostname $host has no ordinal" >&2; exit 2 ;;
    esac
    if [ ! -e "/keys/peer-$ordinal.key" ]; then
        echo "entrypoint: neither /keys/peer.key nor /keys/peer-$ordinal.key exists" >&2
        exit 2
    fi
    export MESHPAY_KEY_FILE="/keys/peer-$ordinal.key"
fi

if [ -z "${MESHPAY_NETWORK__ADVERTISE_HOST:-}" ]; then
    if [ -n "${MESHPAY_PEER_DOMAIN:-}" ]; then
        export MESHPAY_NETWORK__ADVERTISE_HOST="$host.$MESHPAY_PEER_DOMAIN"
    else
        export MESHPAY_NETWORK__ADVERTISE_HOST="$host"
    fi
fi

exec peer run --config "$config" "$@"

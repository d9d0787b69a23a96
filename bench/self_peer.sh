#!/bin/sh
# ferrolab as the peer of `ferrolab bench lm` or `ferrolab bench train-step --peer`, for A/B runs
# of two builds or of an environment switch, interleaved step by step like the PyTorch peer:
#
#   cargo run --release -- bench lm --preset llama-tiny --rounds 3 \
#       --peer-cmd 'FERROLAB_PEER_BIN=/path/to/other/ferrolab sh bench/self_peer.sh "$@"'
#   cargo run --release -- bench train-step --peer --rounds 3 \
#       --peer-cmd 'FERROLAB_X=1 sh bench/self_peer.sh "$@"'
#
# FERROLAB_PEER_BIN: the peer's binary (default: target/release/ferrolab); any other variable set
# in the command reaches the peer only. Arguments: from `bench lm`, RUNCONFIG.json --threads N
# --warmup W --steps S; from `bench train-step`, the number of layers.
set -e
bin=${FERROLAB_PEER_BIN:-target/release/ferrolab}
case "$1" in
*.json)
    config=$1
    shift
    exec "$bin" bench lm --ours-only --run-config "$config" "$@"
    ;;
*)
    exec "$bin" bench train-step --layers "$1"
    ;;
esac

#!/bin/sh
# As in the public image, without its privilege drop (the stand-in already runs as the consul user).
set -e
CONSUL_DATA_DIR=${CONSUL_DATA_DIR:-/consul/data}
CONSUL_CONFIG_DIR=${CONSUL_CONFIG_DIR:-/consul/config}
if [ "${1#-}" != "$1" ]; then
  set -- consul "$@"
fi
if [ "$1" = agent ]; then
  shift
  set -- consul agent -data-dir="$CONSUL_DATA_DIR" -config-dir="$CONSUL_CONFIG_DIR" "$@"
elif [ "$1" = version ]; then
  set -- consul "$@"
elif [ "$1" != consul ] && consul --help 2>&1 | grep -q "^    $1 "; then
  set -- consul "$@"
fi
exec "$@"

#!/bin/sh
# As in the public image: flags go to nats-server, anything else is executed.
set -e
if [ "${1#-}" != "$1" ]; then
  set -- nats-server "$@"
fi
exec "$@"

#!/bin/sh
# The guest's hub for the peer suites (conformance/peers.py), run by /init in place of the executor:
#   `* ping`            → `* ok`
#   `* run NAME ARGS…`  → runs /peers/NAME ARGS… in /tmp, each line it prints as `| line`, then `* exit STATUS`
# Ends when the host hangs up.
while read -r proc request; do
    case "$proc $request" in
    "* ping") echo "* ok" ;;
    "* run "*)
        # shellcheck disable=SC2086  # the arguments are words on purpose
        set -- ${request#run }
        name=$1; shift
        (cd /tmp && "/peers/$name" "$@") > /tmp/peer.out 2>&1
        status=$?
        while IFS= read -r line || [ -n "$line" ]; do echo "| $line"; done < /tmp/peer.out
        echo "* exit $status" ;;
    *) echo "$proc err peer hub: unknown request" ;;
    esac
done

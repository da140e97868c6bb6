#!/bin/sh
# The life of a `local` instance, run by main.tf's provisioners:
#   instance.sh create   wait BOOT_DELAY seconds, then make INSTANCE_DIR and its marker
#   instance.sh destroy  stop the tracker stand-in, then remove INSTANCE_DIR
# Read from the environment: INSTANCE_DIR, ENVIRONMENT, MARKER, BOOT_DELAY (create).
# Nothing is printed before an error, so the engine's one-line error shows its cause.
set -eu

create() {
    if [ "${BOOT_DELAY:-0}" -gt 0 ]; then
        sleep "$BOOT_DELAY"
    fi
    if [ -e "$INSTANCE_DIR" ] && [ ! -d "$INSTANCE_DIR" ]; then
        echo "cannot create the instance: $INSTANCE_DIR exists and is not a directory" >&2
        exit 1
    fi
    if [ -f "$INSTANCE_DIR/$MARKER" ]; then
        owner=$(cat "$INSTANCE_DIR/$MARKER")
        if [ "$owner" != "$ENVIRONMENT" ]; then
            echo "cannot create the instance: $INSTANCE_DIR is the instance of environment '$owner'" >&2
            exit 1
        fi
    elif [ -d "$INSTANCE_DIR" ] && [ -n "$(ls -A "$INSTANCE_DIR")" ]; then
        echo "cannot create the instance: $INSTANCE_DIR already exists and is not empty;" \
            "choose another inputs.local.instance_dir or empty it" >&2
        exit 1
    fi
    mkdir -p -- "$INSTANCE_DIR"
    printf '%s\n' "$ENVIRONMENT" >"$INSTANCE_DIR/$MARKER"
    echo "instance $ENVIRONMENT: booted in ${BOOT_DELAY:-0} s, ready in $INSTANCE_DIR"
}

destroy() {
    if [ ! -e "$INSTANCE_DIR" ]; then
        echo "instance $ENVIRONMENT: $INSTANCE_DIR is already gone"
        return 0
    fi
    if [ ! -f "$INSTANCE_DIR/$MARKER" ]; then
        echo "refusing to remove $INSTANCE_DIR: it has no $MARKER file, so runner did not" \
            "make it; remove it by hand if it is no longer needed" >&2
        exit 1
    fi
    # Powering the instance off stops what runs on it: the tracker stand-in.
    if [ -f "$INSTANCE_DIR/run/tracker.pid" ] && [ -f "$INSTANCE_DIR/bin/tracker-service.py" ]; then
        python3 "$INSTANCE_DIR/bin/tracker-service.py" stop \
            --pidfile "$INSTANCE_DIR/run/tracker.pid" || true
    fi
    rm -rf -- "$INSTANCE_DIR"
    echo "instance $ENVIRONMENT: $INSTANCE_DIR removed"
}

case "${1:-}" in
create) create ;;
destroy) destroy ;;
*)
    echo "usage: instance.sh create|destroy" >&2
    exit 2
    ;;
esac

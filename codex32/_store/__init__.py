"""Container records on disk, standard library only: state, logs, events."""

"""The application: the ``sada`` command line, its commands, replay and the benchmark."""
